"""tailstudy: a re-runnable pipeline for studying long-tailed image-text pre-training data.

The library never imports Prefect; orchestration lives in ``flows/``.
"""
from pipeline.env import configure_offline_env

__version__ = "0.1.0"

configure_offline_env()
