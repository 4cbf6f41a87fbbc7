from pipeline.lifeline import prefect_startup_defaults

prefect_startup_defaults()  # before any Prefect import: a first server start on a busy machine needs more than 20 s
