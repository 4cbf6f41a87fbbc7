"""Prefect orchestration of the pipeline. An entry point (workers import tailstudy.flows as flows as one): it sets the process environment
the project needs (offline, no telemetry, a Prefect start-up timeout that fits a busy machine) before Prefect is
imported."""
from tailstudy.env import configure_offline_env
from tailstudy.lifeline import prefect_startup_defaults

configure_offline_env()
prefect_startup_defaults()  # a first server start on a busy machine needs more than Prefect's 20 s
