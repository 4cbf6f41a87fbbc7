"""Process environment the project needs: offline, no telemetry, no update checks."""
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


def configure_offline_env() -> None:
    for name, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(name, value)
