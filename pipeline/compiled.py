"""The C extension ``tailstudy._core`` (pipeline/_core.c): the phrase matcher's compiled core and the tokeniser's byte
flags. ``core`` is None where the package was installed without a C compiler; every caller then runs its numpy path,
which is the specification the compiled one is tested against (tests/test_core_compiled.py)."""
from __future__ import annotations

try:
    from tailstudy import _core as core
except ImportError:  # pragma: no cover - installed without a C compiler
    core = None
