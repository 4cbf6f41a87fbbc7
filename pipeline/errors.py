"""User-facing errors: one clear line, no traceback."""
from __future__ import annotations


class TailstudyError(Exception):
    """An error caused by the user's input (spec, file, vocabulary); printed as one line."""


class SpecError(TailstudyError):
    pass


class InputError(TailstudyError):
    pass
