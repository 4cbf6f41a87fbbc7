"""What every spec model shares: unknown keys are errors, models are frozen; and a validation error as one line."""
from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

# numpy's and torch's generators take seeds of this range (numpy: any non-negative int, torch: 64 bits; 32 bits is
# what every backend shares)
MAX_SEED = 2**32 - 1
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


def _path_component(value: str) -> str:
    if value.strip(".") == "":
        raise ValueError(f"{value!r} names a directory, not a study (letters, digits, _ . -)")
    return value


# a name that becomes one path component (studies/<name>/): no '/', not '.' or '..', short enough for any file system
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64), AfterValidator(_path_component)]


class _Strict(BaseModel):
    # every float of a spec is finite: nan/inf pass `gt`/`ge` checks unnoticed and fail (or never end) much later
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(part) for part in first["loc"] if not str(part).startswith(("function-", "literal[", "union[")))
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{loc}: {msg}" if loc else msg
