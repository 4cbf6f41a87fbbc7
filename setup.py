"""Package layout (metadata is in pyproject.toml): one import package, `tailstudy`, mapped from the repository's folders:
`pipeline/` is `tailstudy` (the library), `flows/` is `tailstudy.flows` (orchestration), and `data/` and `sql/` ship
inside it as `tailstudy/data` and `tailstudy/sql`, found at run time with importlib.resources (pipeline/paths.py).
Pure Python: the wheel is py3-none-any."""
from setuptools import find_namespace_packages, setup

FOLDERS = {"tailstudy": "pipeline", "tailstudy.flows": "flows", "tailstudy.data": "data", "tailstudy.sql": "sql",
           "tailstudy.deploy": "deploy"}  # deploy/: only what `tailstudy deploy` reads (package_data below)


def packages_in(name: str, folder: str) -> list[str]:
    # namespace-aware: sub-packages without __init__.py (e.g. pipeline/corpus) ship too
    found = find_namespace_packages(where=folder, exclude=["__pycache__", "*.__pycache__"])
    return [name, *(f"{name}.{sub}" for sub in found)]


setup(
    packages=[*packages_in("tailstudy", "pipeline"), *packages_in("tailstudy.flows", "flows"), "tailstudy.data",
              "tailstudy.sql", "tailstudy.deploy"],
    package_dir=FOLDERS,
    package_data={"tailstudy.models": ["configs/*.json"], "tailstudy.data": ["**/*"], "tailstudy.sql": ["**/*.sql"],
                  "tailstudy.deploy": ["prefect.yaml", "work-pools/*.json"]},
)
