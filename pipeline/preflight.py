"""Checks made before any work starts: everything that can be known from the inputs and the machine is rejected in
one line (exit 2) before the first stage runs, never after corpus, match and curate did their work."""
from __future__ import annotations

import os
from pathlib import Path

from tailstudy.errors import InputError, SpecError


def check_workspace(root: str | Path) -> Path:
    """The workspace is a directory this process can write (created when missing) -> its resolved path."""
    path = Path(root).resolve()
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: the workspace path is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{path}: cannot create the workspace ({err.strerror})") from None
    probe = path / f".write-probe-{os.getpid()}"
    try:  # a real write: os.access says yes to root on a read-only mount
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise InputError(f"{path}: the workspace is not writable ({err.strerror})") from None
    return path


def check_train(spec, source: str = "spec") -> None:
    """train.device and train.arch against this machine and the model registries (open_clip's configs + ours)."""
    import torch

    if spec.train.device == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"{source}: train.device: cuda, but no CUDA device is visible on this machine (use auto or cpu)")
    import open_clip

    from tailstudy.models.learners import _register_configs

    _register_configs()
    known = open_clip.list_models()
    if spec.train.arch not in known:
        close = [a for a in known if a.lower().startswith(spec.train.arch.lower()[:4])][:5]
        hint = f" (e.g. {', '.join(close)})" if close else " (tiny, or an open_clip config such as ViT-B-32)"
        raise SpecError(f"{source}: train.arch: unknown model config {spec.train.arch!r}{hint}")


def check_run(spec, workspace: str | Path, source: str = "spec") -> Path:
    """Everything `tailstudy run` can check before the first stage -> the workspace path."""
    path = check_workspace(workspace)
    check_train(spec, source)
    return path


def check_id_type(path: Path, column: str | None, dtype) -> None:
    """Sample ids are text or integers (a list or struct column cannot identify a sample)."""
    import pyarrow as pa

    if column is None or dtype is None:
        return
    if not (pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_integer(dtype)
            or pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype)):
        raise InputError(f"{path}: id column {column!r} holds {dtype}, not text or integers")


def first_duplicate_id(sources: list) -> None:
    """Sample ids must be unique across the input (duplicates would be merged into one sample and bias every count):
    one InputError naming the first repeated id (in input order) and a file holding it. Linear: one hash count."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from tailstudy.matching.inputs import plan_shards, read_batches

    if all(s.id_col is None for s in sources):
        return  # row numbers are unique by construction
    parts, owner = [], []
    for shard in plan_shards(sources):
        for ids, _captions in read_batches(shard):
            parts.append(ids.cast(pa.string()))
            owner.append(shard.source)
    if not parts:
        return
    ids = pa.chunked_array(parts, pa.string())
    counts = pc.value_counts(ids)
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(repeated) == 0:
        return
    for part, source in zip(parts, owner):
        hit = pc.index(pc.is_in(part, value_set=repeated), True).as_py()
        if hit >= 0:
            raise InputError(f"{source.path}: column {source.id_col!r}: duplicate sample id {part[hit].as_py()!r} "
                             "(ids must be unique)")
