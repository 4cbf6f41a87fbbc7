"""Where the shipped data and SQL live: package data of `tailstudy` (`tailstudy/data`, `tailstudy/sql` in a wheel, mapped
from the repository's `data/` and `sql/` by setup.py's package_dir), found with importlib.resources. A path-based
editable install (a checkout on sys.path) has no such folders inside the package: there they are the checkout's."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

PACKAGE_DIR = Path(str(files("tailstudy")))
REPO_ROOT = PACKAGE_DIR.parent  # only meaningful in a checkout (deploy/ files, editable installs)


def _shipped(name: str) -> Path:
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else REPO_ROOT / name


DATA_DIR = _shipped("data")
SQL_DIR = _shipped("sql")
DEPLOY_DIR = _shipped("deploy")  # in a wheel, only prefect.yaml and work-pools/ (what `tailstudy deploy` reads)
REFERENCE_FREQ_DIR = DATA_DIR / "reference" / "freqs"
