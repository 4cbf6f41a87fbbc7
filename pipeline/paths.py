"""Where the project's shipped data and SQL live (the repository is installed in editable mode)."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
SQL_DIR = REPO_ROOT / "sql"
REFERENCE_FREQ_DIR = DATA_DIR / "reference" / "freqs"
