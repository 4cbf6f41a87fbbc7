"""Prefect orchestration of the pipeline. An entry point (workers import flows as one): it sets the process environment
the project needs (offline, no telemetry) before Prefect is imported."""
from pipeline.env import configure_offline_env

configure_offline_env()
