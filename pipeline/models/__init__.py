"""Learners compared by a study, by name.

Each learner class (``learners.py``) registers under its name and *declares* its options in its constructor: the
parameters beyond what every learner is given (``CONTEXT``) are train options (fields of ``TrainSpec``) that can
change its result, so they enter its training stage key; ``reads_captions`` says whether its training reads
captions. Nothing else lists them: a new learner is one registered class. An option a learner does not declare is
an error, never silently ignored.
"""
from __future__ import annotations

import inspect
from typing import Callable

COMMON_OPTIONS = ("arch", "epochs", "batch_size", "lr", "weight_decay", "max_steps")  # every learner reads these
# what the study hands a learner it declares (head_embeddings: a frozen head's class embeddings made by another run)
CONTEXT = ("arch", "num_classes", "class_counts", "class_names", "head_embeddings")

LEARNERS: dict[str, Callable] = {}


def register(name: str):
    def wrap(cls):
        LEARNERS[name] = cls
        cls.name = name
        return cls

    return wrap


def known_learners() -> dict[str, Callable]:
    from tailstudy.models import learners  # noqa: F401 -- fills LEARNERS; torch + open_clip (s): never for `match`

    return LEARNERS


def _declared(name: str) -> list[str]:
    if name not in known_learners():
        raise KeyError(f"unknown learner {name!r} (known: {', '.join(LEARNERS)})")
    params = inspect.signature(LEARNERS[name].__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def learner_options(name: str) -> tuple[str, ...]:
    """The train options that enter this learner's training key: the common ones and those it declares (each a field
    of TrainSpec: checked when the learners load, tailstudy.models.learners)."""
    return (*COMMON_OPTIONS, *(p for p in _declared(name) if p not in CONTEXT))


def reads_captions(name: str) -> bool:
    return bool(getattr(known_learners()[name], "reads_captions", False))


def make_learner(name: str, **kwargs):
    """The learner `name`, given the context it declares (class counts, names, ...) and its options; an option it
    does not declare is an error."""
    declared = set(_declared(name))
    unknown = [k for k in kwargs if k not in declared and k not in CONTEXT]
    if unknown:
        raise TypeError(f"learner {name!r} has no option {unknown[0]!r} (it declares: {', '.join(sorted(declared))})")
    return LEARNERS[name](**{k: v for k, v in kwargs.items() if k in declared})


def learner_kwargs(name: str, cfg, **context) -> dict:
    """Context + the learner's declared options read from the train spec `cfg`."""
    return {**context, **{k: getattr(cfg, k) for k in learner_options(name) if k not in COMMON_OPTIONS},
            "arch": cfg.arch}
