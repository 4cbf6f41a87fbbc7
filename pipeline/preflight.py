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

    from tailstudy.models.towers import _register_configs

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
    if getattr(spec.corpus, "source", None) == "urls":
        check_img2dataset(f"{source}: corpus.source: urls")
    check_resources(spec, path, source)
    check_world(spec, source)
    return path


# ---------------------------------------------------------------- consequences of a spec, before any work

# Lower bounds, so that a refusal is certain: a training sample is three tar members (image, caption, fields), each a
# 512-byte header and at least one 512-byte block; an evaluation sample is one member. While the corpus is written,
# each training sample holds at least ~600 bytes of Python strings (its caption fields and ids).
DISK_PER_TRAIN_IMAGE = 3 * 1024
DISK_PER_EVAL_IMAGE = 1024
MEMORY_PER_TRAIN_IMAGE = 600


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


def available_memory() -> int:
    """Bytes of memory this machine can give now (Linux: MemAvailable; elsewhere the free pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: never refuse on memory


def synthetic_images(spec) -> tuple[int, int]:
    """(training images, evaluation images) the synthetic world renders: every target concept gets at least
    corpus.min_count samples, the open ones share open_samples, and evaluate.per_class images per target concept."""
    cfg = spec.corpus
    train = max(cfg.samples, cfg.concepts * cfg.min_count) + (cfg.open_samples if cfg.open_concepts else 0)
    return train, spec.evaluate.per_class * cfg.concepts


def _input_pixels(arch: str) -> int:
    import open_clip

    size = (open_clip.get_model_config(arch) or {}).get("vision_cfg", {}).get("image_size", 224)
    return int(size[0] * size[1]) if isinstance(size, (list, tuple)) else int(size) ** 2


def check_resources(spec, workspace: Path, source: str = "spec") -> None:
    """What the spec makes the machine hold, against what it has: the synthetic world's images on disk and its rows in
    memory, and one training batch of float images in memory. One line naming the fields and the numbers."""
    import shutil

    memory = available_memory()
    trains = [run.train for run in spec.learner_runs()] if hasattr(spec, "learner_runs") else [spec.train]
    for train in trains:
        batch = train.batch_size * 3 * _input_pixels(train.arch) * 4
        if batch > memory:
            raise SpecError(f"{source}: train.batch_size {train.batch_size:,}: one batch of {train.arch} inputs is "
                            f"{_gb(batch)} of memory; this machine has {_gb(memory)} available")
    if getattr(spec.corpus, "source", "synthetic") != "synthetic":
        return  # a real corpus's size is its input's
    train, evaluation = synthetic_images(spec)
    what = (f"the synthetic world renders about {train + evaluation:,} images (corpus.samples, corpus.min_count x "
            f"concepts, open_samples; evaluate.per_class x {spec.corpus.concepts} classes)")
    disk = train * DISK_PER_TRAIN_IMAGE + evaluation * DISK_PER_EVAL_IMAGE
    free = shutil.disk_usage(workspace).free
    if disk > free:
        raise SpecError(f"{source}: {what}: at least {_gb(disk)} on disk; {workspace} has {_gb(free)} free")
    if train * MEMORY_PER_TRAIN_IMAGE > memory:
        raise SpecError(f"{source}: {what}: at least {_gb(train * MEMORY_PER_TRAIN_IMAGE)} of memory while it is "
                        f"written; this machine has {_gb(memory)} available")


def check_world(spec, source: str = "spec") -> None:
    """The synthetic world's concepts are chosen as the corpus stage chooses them (the same code and seed): a world
    over its capacity (shape x colour x texture families) or over the vocabulary's unambiguous classes is refused
    now, not when the corpus stage starts; and so are class lists (`concepts:` of the base and every factor level,
    `evaluate.classes`) that name classes the world's targets do not have, checked by the curate and evaluate stages'
    own selection."""
    if getattr(spec.corpus, "source", "synthetic") != "synthetic":
        return  # a real corpus's targets are known once it is read
    import numpy as np

    from tailstudy.corpus.synthetic import choose_concepts
    from tailstudy.curate import select_concepts
    from tailstudy.spec import Cell, expand
    from tailstudy.vocab import imagenet1k, load_vocab

    try:
        world = choose_concepts(spec.corpus, imagenet1k(), np.random.default_rng([spec.corpus.seed, 0]))
    except SpecError as err:
        raise SpecError(f"{source}: {err}") from None
    targets = sorted(c.concept_id for c in world if c.is_target)
    names = {c.concept_id: c.name for c in load_vocab(spec.vocabulary).concepts}
    checks = [("evaluate.classes", spec.evaluate.classes, 0)]
    for cell in [Cell(factor="base", level="base", subset=spec.base), *expand(spec)]:
        where = "base.concepts" if cell.factor == "base" else f"factors.{cell.factor} {cell.level}: concepts"
        checks.append((where, cell.subset.concepts, spec.corpus.seed))
    for where, choice, seed in checks:
        try:
            select_concepts(targets, choice, names, seed)
        except SpecError as err:
            raise SpecError(f"{source}: {where}: {str(err).removeprefix('concepts: ')}") from None


def check_img2dataset(what: str) -> None:
    """URL downloads need img2dataset, an optional dependency (the `ingest` extra; see pyproject.toml for why)."""
    import importlib.util

    if importlib.util.find_spec("img2dataset") is None:
        raise InputError(f"{what} downloads with img2dataset, which is not installed: pip install 'tailstudy[ingest]'")


def check_id_type(path: Path, column: str | None, dtype) -> None:
    """Sample ids are text or integers (a list or struct column cannot identify a sample)."""
    import pyarrow as pa

    if column is None or dtype is None:
        return
    if pa.types.is_dictionary(dtype):  # a pandas category: its values are the ids
        dtype = dtype.value_type
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
