"""The subset a curate stage builds (`base:` and each factor level): imbalance, caption variant, scale, classes,
open world, diversity, trimmed tail; and factor expansion into cells."""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tailstudy.frequency import reference_tables
from tailstudy.spec.base import _Strict
from tailstudy.spec.corpus import ZipfProfile
from tailstudy.variants import CAPTION_VARIANTS

if TYPE_CHECKING:
    from tailstudy.spec.study import StudySpec


class ExponentialProfile(_Strict):
    exponential: float = Field(ge=1)  # max/min count ratio


class MatchProfile(_Strict):
    match: str  # a shipped reference table, e.g. laion400m, incaps_imagenet_ori

    @field_validator("match")
    @classmethod
    def _table_exists(cls, value: str) -> str:
        known = reference_tables()
        if value not in known and f"{value}_imagenet_ori" not in known:
            raise ValueError(f"no reference frequency table {value!r} (e.g. laion400m, metaclip_400m, incaps_imagenet)")
        return value


class CapProfile(_Strict):
    cap: int = Field(ge=1)  # MetaCLIP-style balancing threshold t


class DiversityThreshold(_Strict):
    threshold: float = Field(ge=0.0, le=1.0)


class TrimTail(_Strict):
    last_k: int = Field(ge=1)
    ceil: int = Field(ge=0)  # 0 = the k rarest classes are never seen in training (zero-shot)


ImbalanceLevel = Union[Literal["natural", "balanced"], ZipfProfile, ExponentialProfile, MatchProfile, CapProfile]
IMBALANCE_KINDS = {"zipf": ZipfProfile, "exponential": ExponentialProfile, "match": MatchProfile, "cap": CapProfile}
CAPTION_FIELDS = ("title", "tags", "description")
NAMED_CLASS_LISTS = ("imagenet100",)


class SubsetSpec(_Strict):
    """One point in factor space: what the curate stage builds."""

    imbalance: ImbalanceLevel = "natural"
    # cname | a_cname | templates | synonym_templates | full (the paper's Full Text: class name + title, tags,
    # description) | full_unprefixed (ours: the web caption as drawn) | title, tags, description and '+' combinations
    caption: str = "full"
    # every natural-text caption names its class, so every variant keeps the same samples (the paper's rule):
    # where_missing (default) prefixes the class name where the text does not name it already; true: always, as the
    # paper's code does; false: never (tailstudy.variants.with_name says why where_missing is the default)
    name_prefix: Union[bool, Literal["where_missing"]] = "where_missing"
    scale: float = Field(1.0, gt=0)  # <= 1: fraction of the pool; > 1: number of samples
    # 'all' | k (k random target classes) | a named list ('imagenet100') | a list of class names
    concepts: Union[int, str, list[str]] = "all"
    # true (ours): add the label-less captions on top of the labelled ones; equal_size (the paper's IN-Caps-100 vs
    # IN-Caps 10% comparison): captions of open-world concepts replace labelled ones, the total staying the same
    open_world: Union[bool, Literal["equal_size"]] = False
    # d in (0, 1]: each class drawn from a d-fraction of its distinct images; {threshold: t}: LAIONet-style, only
    # captions whose semantic-matcher similarity to "name: definition" reaches t (needs matching.method semantic)
    diversity: Union[float, DiversityThreshold] = 1.0
    trim_tail: Optional[TrimTail] = None

    @field_validator("imbalance", mode="before")
    @classmethod
    def _imbalance_kind(cls, value: Any) -> Any:
        """Dispatch on the level's form so that errors name the real problem, not every union branch."""
        if isinstance(value, str):
            if value not in ("natural", "balanced"):
                raise ValueError(f"unknown imbalance {value!r} (natural, balanced, zipf: a, exponential: r, "
                                 "match: TABLE, cap: t)")
            return value
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in IMBALANCE_KINDS:
            return IMBALANCE_KINDS[next(iter(value))].model_validate(value)
        if isinstance(value, BaseModel):
            return value
        raise ValueError("imbalance must be natural, balanced or one of {zipf: a}, {exponential: r}, {match: TABLE}, "
                         "{cap: t}")

    @field_validator("diversity")
    @classmethod
    def _diversity_range(cls, value):
        if isinstance(value, float) and not 0 < value <= 1:
            raise ValueError("diversity must be a fraction in (0, 1] or {threshold: t}")
        return value

    @field_validator("caption")
    @classmethod
    def _caption_kind(cls, value: str) -> str:
        parts = value.split("+")
        if value in CAPTION_VARIANTS or (all(p in CAPTION_FIELDS for p in parts) and len(set(parts)) == len(parts)):
            return value
        raise ValueError(f"unknown caption variant {value!r} ({', '.join((*CAPTION_VARIANTS, *CAPTION_FIELDS))}, "
                         "or fields joined with '+', e.g. title+tags)")

    @field_validator("concepts")
    @classmethod
    def _concepts_kind(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("concepts must be 'all', a number of classes, a named list or a list of class names")
        if isinstance(value, int) and value < 2:
            raise ValueError("concepts: at least 2 classes")
        if isinstance(value, str) and value != "all" and value not in NAMED_CLASS_LISTS:
            raise ValueError(f"unknown class list {value!r} (all, {', '.join(NAMED_CLASS_LISTS)}, a number, or names)")
        if isinstance(value, list) and len(value) < 2:
            raise ValueError("concepts: at least 2 classes")
        return value

    @field_validator("scale")
    @classmethod
    def _scale_count_is_whole(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError("a scale above 1 is a sample count and must be a whole number")
        return value


class Cell(BaseModel):
    """One subset of a study: the factor it varies, the level's label and the full subset spec."""

    model_config = ConfigDict(frozen=True)
    factor: str
    level: str
    subset: SubsetSpec


def level_label(level: Any) -> str:
    if isinstance(level, BaseModel):
        level = level.model_dump()
    if isinstance(level, dict):
        return ",".join(f"{k}={v}" for k, v in level.items() if v is not None)
    if isinstance(level, list):
        return ",".join(str(v) for v in level)
    return str(level).lower() if isinstance(level, bool) else str(level)


def expand(spec: StudySpec) -> list[Cell]:
    """Factor levels -> subset cells: one factor at a time around `base`, or the full grid."""
    base = spec.base.model_dump()
    if not spec.factors:
        return [Cell(factor="base", level="base", subset=spec.base)]
    if spec.grid:
        names = list(spec.factors)
        cells = []
        for combo in itertools.product(*(spec.factors[n] for n in names)):
            subset = SubsetSpec.model_validate({**base, **dict(zip(names, combo))})
            cells.append(Cell(factor="+".join(names), level="+".join(level_label(c) for c in combo), subset=subset))
        return cells
    return [
        Cell(factor=factor, level=level_label(level), subset=SubsetSpec.model_validate({**base, factor: level}))
        for factor, levels in spec.factors.items()
        for level in levels
    ]
