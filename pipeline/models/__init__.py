"""Learners compared by a study, by name.

The table below is what the rest of the library needs to know about a learner without importing torch: which
train-config options can change its result (they enter its training stage key) and whether it reads captions.
The classes themselves live in ``learners.py`` and register under the same names.
"""
from __future__ import annotations

from typing import Callable

COMMON_OPTIONS = ("arch", "epochs", "batch_size", "lr", "weight_decay")
LEARNER_OPTIONS: dict[str, tuple[str, ...]] = {
    "clip": ("text_tower",),
    "sl": ("head",),
    "sl_sampled_vocab": ("head", "num_to_sample", "vocab_weights", "vocab_chunk"),
    "sl_frozen_text_head": (),
    "sl_sampled_vocab_frozen_text": ("num_to_sample", "vocab_weights", "vocab_chunk"),
    "sl_batch_logit_adjust": ("head",),  # ours: a mechanism test, not one of the paper's learners
}
TEXT_LEARNERS = {"clip"}  # learners whose training reads captions

LEARNERS: dict[str, Callable] = {}


def register(name: str):
    if name not in LEARNER_OPTIONS:
        raise KeyError(f"learner {name!r} needs an entry in LEARNER_OPTIONS")

    def wrap(cls):
        LEARNERS[name] = cls
        cls.name = name
        return cls

    return wrap


def make_learner(name: str, **kwargs):
    from pipeline.models import learners  # noqa: F401  (importing it fills the registry)

    return LEARNERS[name](**kwargs)
