"""Package layout (metadata is in pyproject.toml): the repository's `data/` and `sql/` ship inside the import package
as `pipeline/data` and `pipeline/sql`, found at run time with importlib.resources (pipeline/paths.py)."""
from setuptools import find_packages, setup

SHIPPED = {"pipeline.data": "data", "pipeline.sql": "sql"}

setup(
    packages=find_packages(include=["pipeline", "pipeline.*", "flows", "flows.*"]) + list(SHIPPED),
    package_dir=SHIPPED,
    package_data={"pipeline.models": ["configs/*.json"], "pipeline.data": ["**/*"], "pipeline.sql": ["**/*.sql"]},
)
