"""Study specification: YAML -> validated pydantic model, and factor expansion.

Unknown keys are errors reported with their dotted path, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import SpecError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ZipfProfile(_Strict):
    zipf: float = Field(gt=0)


class CorpusSpec(_Strict):
    source: Literal["synthetic"] = "synthetic"
    concepts: int = Field(100, ge=2, le=400)
    open_concepts: int = Field(100, ge=0, le=500)
    samples: int = Field(20000, ge=10)
    open_samples: int = Field(4000, ge=0)
    # "laion400m" etc. = a shipped reference table (data/reference/freqs); "uniform"; or {zipf: a}
    profile: Union[str, ZipfProfile] = "laion400m"
    min_count: int = Field(5, ge=1)
    image_size: int = Field(32, ge=16, le=128)
    variation: float = Field(1.0, ge=0.0, le=3.0)
    unnamed_frac: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = 0


class MatchingSpec(_Strict):
    method: Literal["phrase"] = "phrase"


class EvalSpec(_Strict):
    per_class: int = Field(30, ge=1)
    prompts: Literal["a_cname", "templates"] = "a_cname"


class ExponentialProfile(_Strict):
    exponential: float = Field(ge=1)  # max/min count ratio


class MatchProfile(_Strict):
    match: str  # a shipped reference table, e.g. laion400m, incaps_imagenet_ori

    @field_validator("match")
    @classmethod
    def _table_exists(cls, value: str) -> str:
        from pipeline.frequency import reference_tables

        known = reference_tables()
        if value not in known and f"{value}_imagenet_ori" not in known:
            raise ValueError(f"no reference frequency table {value!r} (e.g. laion400m, metaclip_400m, incaps_imagenet)")
        return value


class CapProfile(_Strict):
    cap: int = Field(ge=1)  # MetaCLIP-style balancing threshold t


class TrimTail(_Strict):
    last_k: int = Field(ge=1)
    ceil: int = Field(ge=0)  # 0 = the k rarest classes are never seen in training (zero-shot)


ImbalanceLevel = Union[Literal["natural", "balanced"], ZipfProfile, ExponentialProfile, MatchProfile, CapProfile]
IMBALANCE_KINDS = {"zipf": ZipfProfile, "exponential": ExponentialProfile, "match": MatchProfile, "cap": CapProfile}
CAPTION_SINGLE = ("cname", "a_cname", "templates", "synonym_templates", "full")
CAPTION_FIELDS = ("title", "tags", "description")
NAMED_CLASS_LISTS = ("imagenet100",)


class SubsetSpec(_Strict):
    """One point in factor space: what the curate stage builds."""

    imbalance: ImbalanceLevel = "natural"
    # cname | a_cname | templates | synonym_templates | full | title, tags, description and their '+' combinations
    caption: str = "full"
    # prefix the class name to natural-text variants so that every variant keeps the same samples (as the paper does)
    name_prefix: bool = True
    scale: float = Field(1.0, gt=0)  # <= 1: fraction of the pool; > 1: number of samples
    # 'all' | k (k random target classes) | a named list ('imagenet100') | a list of class names
    concepts: Union[int, str, list[str]] = "all"
    open_world: bool = False
    diversity: float = Field(1.0, gt=0, le=1.0)
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

    @field_validator("caption")
    @classmethod
    def _caption_kind(cls, value: str) -> str:
        parts = value.split("+")
        if value in CAPTION_SINGLE or (all(p in CAPTION_FIELDS for p in parts) and len(set(parts)) == len(parts)):
            return value
        raise ValueError(f"unknown caption variant {value!r} ({', '.join(CAPTION_SINGLE + CAPTION_FIELDS)}, "
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


class TrainSpec(_Strict):
    arch: str = "tiny"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # sl_sampled_vocab: classes in the per-step vocabulary (present ones always included)
    num_to_sample: int = Field(16, ge=2)
    vocab_weights: Literal["uniform", "linear", "sqrt"] = "uniform"
    # supervised heads: a linear layer, or cosine similarity to learned class prototypes
    head: Literal["linear", "cosine"] = "linear"
    # clip: text tower trained from scratch, or the packaged MiniLM sentence encoder frozen / fine-tuned
    text_tower: Literal["scratch", "minilm_frozen", "minilm_finetune"] = "scratch"


class StudySpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    corpus: CorpusSpec = CorpusSpec()
    vocabulary: str = "imagenet1k"
    matching: MatchingSpec = MatchingSpec()
    eval: EvalSpec = EvalSpec()
    base: SubsetSpec = SubsetSpec()
    factors: dict[str, list[Any]] = {}
    grid: bool = False
    models: list[str] = ["clip", "sl"]
    train: TrainSpec = TrainSpec()
    seeds: list[int] = [0]

    @model_validator(mode="after")
    def _check_factors_and_models(self) -> "StudySpec":
        from pipeline.models import LEARNER_OPTIONS

        for model in self.models:
            if model not in LEARNER_OPTIONS:
                raise ValueError(f"models: unknown learner {model!r} (known: {', '.join(LEARNER_OPTIONS)})")
        for factor, levels in self.factors.items():
            if factor not in SubsetSpec.model_fields:
                raise ValueError(f"factors.{factor}: unknown factor (known: {', '.join(SubsetSpec.model_fields)})")
            if not levels:
                raise ValueError(f"factors.{factor}: needs at least one level")
            labels = [level_label(level) for level in levels]
            if len(set(labels)) != len(labels):
                raise ValueError(f"factors.{factor}: repeated level")
            for i, level in enumerate(levels):
                try:
                    SubsetSpec.model_validate({**self.base.model_dump(), factor: level})
                except ValidationError as err:
                    raise ValueError(f"factors.{factor}[{i}]: {_first_error(err)}") from None
        if not self.seeds:
            raise ValueError("seeds: needs at least one seed")
        return self


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


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(part) for part in first["loc"] if not str(part).startswith(("function-", "literal[", "union[")))
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{loc}: {msg}" if loc else msg


def parse_spec(data: Any, source: str = "spec") -> StudySpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a study spec must be a YAML mapping")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(f"{source}: {_first_error(err)}") from None


def load_spec(path: str | Path) -> StudySpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}: invalid YAML{where}") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text") from None
    return parse_spec(data, str(path))


def default_spec_path() -> Path:
    from pipeline.paths import DATA_DIR

    return DATA_DIR / "studies" / "default.yaml"
