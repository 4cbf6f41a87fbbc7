"""Learners compared by a study, by name. Each one trains on a batch and classifies images over a class list."""
from __future__ import annotations

from typing import Callable

LEARNERS: dict[str, Callable] = {}


def register(name: str):
    def wrap(cls):
        LEARNERS[name] = cls
        cls.name = name
        return cls

    return wrap


def make_learner(name: str, **kwargs):
    from pipeline.models import learners  # noqa: F401  (fills the registry)

    return LEARNERS[name](**kwargs)


# learner names are needed by spec validation without importing torch
for _name in ("clip", "sl", "sl_sampled_vocab"):
    LEARNERS.setdefault(_name, None)  # type: ignore[arg-type]
