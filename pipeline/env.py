"""Process environment the project needs (offline, no telemetry, no update checks, no progress bars of libraries;
children that import only what is installed) and what the machine gives this process (cores, memory)."""
from __future__ import annotations

import os

# Defaults only: a user who points at a real Prefect server or a hub mirror keeps their own setting.
OFFLINE_DEFAULTS: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bar when the MiniLM encoder loads
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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def available_memory() -> int:
    """Bytes of memory this machine can give now (Linux: MemAvailable; elsewhere the free pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: never refuse on memory
