"""Checks made before any work starts: everything that can be known from the inputs and the machine is rejected in
one line (exit 2) before the first stage runs, never after corpus, match and curate did their work."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tailstudy.corpus.download_run import check_img2dataset
from tailstudy.corpus.synthetic import choose_concepts
from tailstudy.curate import select_concepts
from tailstudy.env import available_memory
from tailstudy.errors import SpecError
from tailstudy.spec import Cell, expand
from tailstudy.store import check_workspace
from tailstudy.vocab import imagenet1k, load_vocab


def check_train(spec, source: str = "spec") -> None:
    """train.device and train.arch against this machine and the model registries (open_clip's configs + ours), and
    one training batch of float images of each learner against the memory this machine has."""
    from tailstudy.models.towers import input_pixels, train_problem  # torch + open_clip (s): only a check pays them

    problem = train_problem(spec.train.device, spec.train.arch)
    if problem:
        raise SpecError(f"{source}: {problem}")
    memory = available_memory()
    trains = [run.train for run in spec.learner_runs()] if hasattr(spec, "learner_runs") else [spec.train]
    for train in trains:
        batch = train.batch_size * 3 * input_pixels(train.arch) * 4
        if batch > memory:
            raise SpecError(f"{source}: train.batch_size {train.batch_size:,}: one batch of {train.arch} inputs is "
                            f"{_gb(batch)} of memory; this machine has {_gb(memory)} available")


_PASSED: set[tuple] = set()  # checks that passed in this process (the world's check takes seconds)


def check_run(spec, workspace: str | Path, source: str = "spec") -> Path:
    """Everything `tailstudy run` can check before the first stage -> the workspace path."""
    path = check_workspace(workspace)
    check_study(spec, path, source)
    return path


def check_study(spec, workspace: Path, source: str = "spec", trains_here: bool = True) -> None:
    """What a study's spec implies on this machine (device, arch, downloads, disk and memory, the world's capacity):
    `tailstudy run` checks it with the workspace, a flow run (a submitted study, on its worker) before its first
    stage. `trains_here` off: training runs elsewhere (dispatched to GPU workers), so this machine's devices do not
    matter."""
    done = (spec.model_dump_json(), str(workspace), trains_here)
    if done in _PASSED:  # `tailstudy run` checked it before its flow started, in this process
        return
    if trains_here:
        check_train(spec, source)
    if getattr(spec.corpus, "source", None) == "urls":
        check_img2dataset(f"{source}: corpus.source: urls")
    check_resources(spec, workspace, source)
    check_world(spec, source)
    _PASSED.add(done)


# ---------------------------------------------------------------- consequences of a spec, before any work

# Lower bounds, so that a refusal is certain: a training sample is three tar members (image, caption, fields), each a
# 512-byte header and at least one 512-byte block; an evaluation sample is one member. While the corpus is written,
# each training sample holds at least ~600 bytes of Python strings (its caption fields and ids).
DISK_PER_TRAIN_IMAGE = 3 * 1024
DISK_PER_EVAL_IMAGE = 1024
MEMORY_PER_TRAIN_IMAGE = 600


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


def synthetic_images(spec) -> tuple[int, int]:
    """(training images, evaluation images) the synthetic world renders: every target concept gets at least
    corpus.min_count samples, the open ones share open_samples, and evaluate.per_class images per target concept."""
    cfg = spec.corpus
    train = max(cfg.samples, cfg.concepts * cfg.min_count) + (cfg.open_samples if cfg.open_concepts else 0)
    return train, spec.evaluate.per_class * cfg.concepts


def check_resources(spec, workspace: Path, source: str = "spec") -> None:
    """What the synthetic world makes the machine hold, against what it has: its images on disk and its rows in
    memory while it is written. One line naming the fields and the numbers."""
    memory = available_memory()
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
