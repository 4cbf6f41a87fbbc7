"""Process environment the project needs: offline, no telemetry, no update checks; children that import only what
is installed."""
from __future__ import annotations

import os

# Defaults only: a user who points at a real Prefect server or a hub mirror keeps their own setting.
OFFLINE_DEFAULTS: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_UI_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_DISABLED": "true",
}


# Set, not defaults: every Python process tailstudy starts (Prefect's server as `python -m uvicorn`, the watchdog,
# torchrun ranks, forkserver / spawn workers of the match pool and the data loader) would otherwise put its current
# directory (`-m`, `-c`) first on sys.path, and a user's `concurrent.py` or `json.py` there would run inside it.
CHILD_ISOLATION: dict[str, str] = {"PYTHONSAFEPATH": "1"}


def configure_offline_env() -> None:
    for name, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(name, value)
    os.environ.update(CHILD_ISOLATION)
