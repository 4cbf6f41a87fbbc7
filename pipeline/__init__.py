"""tailstudy: a re-runnable pipeline for studying long-tailed image-text pre-training data.

The library never imports Prefect; orchestration lives in ``flows/``. Importing it changes nothing in the process:
entry points (the CLI, flows) call ``tailstudy.env.configure_offline_env()``.
"""

__version__ = "0.1.0"
