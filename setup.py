"""Package layout (metadata is in pyproject.toml): the repository's `data/` and `sql/` ship inside the import package
as `pipeline/data` and `pipeline/sql`, found at run time with importlib.resources (pipeline/paths.py)."""
from setuptools import find_namespace_packages, setup

SHIPPED = {"pipeline.data": "data", "pipeline.sql": "sql"}

setup(
    # namespace-aware: sub-packages without __init__.py (e.g. pipeline/corpus) ship too
    packages=find_namespace_packages(include=["pipeline", "pipeline.*", "flows", "flows.*"],
                                     exclude=["*.__pycache__"]) + list(SHIPPED),
    package_dir=SHIPPED,
    package_data={"pipeline.models": ["configs/*.json"], "pipeline.data": ["**/*"], "pipeline.sql": ["**/*.sql"]},
)
