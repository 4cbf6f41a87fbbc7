"""Package layout (metadata is in pyproject.toml): one import package, `tailstudy`, mapped from the repository's folders:
`pipeline/` is `tailstudy` (the library), `flows/` is `tailstudy.flows` (orchestration), and `data/` and `sql/` ship
inside it as `tailstudy/data` and `tailstudy/sql`, found at run time with importlib.resources (pipeline/paths.py).

One optional C extension, the phrase matcher's compiled core (pipeline/_core.c): where no C compiler is found
the install still succeeds and the matcher runs its numpy path (same matches, slower)."""
import hashlib
from pathlib import Path

from setuptools import Extension, find_namespace_packages, setup

CORE = "pipeline/_core.c"
# the build remembers its source: tests/test_core_compiled.py fails on a stale build (a C change without a reinstall)
CORE_SHA256 = hashlib.sha256((Path(__file__).resolve().parent / CORE).read_bytes()).hexdigest()
FOLDERS = {"tailstudy": "pipeline", "tailstudy.flows": "flows", "tailstudy.data": "data", "tailstudy.sql": "sql"}


def packages_in(name: str, folder: str) -> list[str]:
    # namespace-aware: sub-packages without __init__.py (e.g. pipeline/corpus) ship too
    found = find_namespace_packages(where=folder, exclude=["__pycache__", "*.__pycache__"])
    return [name, *(f"{name}.{sub}" for sub in found)]


setup(
    packages=packages_in("tailstudy", "pipeline") + packages_in("tailstudy.flows", "flows") + ["tailstudy.data",
                                                                                              "tailstudy.sql"],
    package_dir=FOLDERS,
    ext_modules=[Extension("tailstudy._core", [CORE], optional=True, extra_compile_args=["-O2"],
                           define_macros=[("CORE_SOURCE_SHA256", f'"{CORE_SHA256}"')])],
    package_data={"tailstudy.models": ["configs/*.json"], "tailstudy.data": ["**/*"], "tailstudy.sql": ["**/*.sql"]},
)
