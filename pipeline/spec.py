"""Study specification: YAML -> validated pydantic model, and factor expansion.

Unknown keys are errors reported with their dotted path, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_serializer,
                      model_validator)

from tailstudy.errors import SpecError


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
    image_size: int = Field(32, ge=16, le=512)
    variation: float = Field(1.0, ge=0.0, le=3.0)
    unnamed_frac: float = Field(0.2, ge=0.0, lt=1.0)
    seed: int = 0
    # 3: concept families follow the WordNet hierarchy (semantic siblings look alike, so names carry visual
    # information); 2: the previous world (families of random concepts). World 2 keeps its corpus key: the dump omits it.
    world: Literal[2, 3] = 3

    @model_serializer(mode="wrap")
    def _omit_old_world(self, handler):
        data = handler(self)
        if data.get("world") == 2:
            data.pop("world")
        return data


# ---------------------------------------------------------------- corpus sources (dispatched on `source`)
# `CorpusSpec` keeps its name and fields: it is the synthetic world (tests and tailstudy.corpus.synthetic build it
# directly). A study's `corpus:` is `AnyCorpusSpec`, the union of every source, chosen by its `source` key
# (default: synthetic), so an error names the real problem under its own path, e.g. `corpus.url_col: ...`.
# Targets of a real corpus: the whole vocabulary, the classes of the evaluation folder, or a list of class names/keys.
CorpusTargets = Union[Literal["vocabulary", "eval"], list[str]]


class _RealCorpusSpec(_Strict):
    """What every non-synthetic source shares. Paths are relative to the working directory; the corpus key hashes
    the content they point to (file digests, directory listings), never the path itself."""

    image_size: int = Field(64, ge=16, le=1024)
    targets: CorpusTargets = "vocabulary"
    seed: int = 0  # seeds the curate stage's draws, as for the synthetic world

    @field_validator("targets")
    @classmethod
    def _targets_not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("give 'vocabulary', 'eval' or at least one class name")
        return value


URL_PRESETS: dict[str, dict[str, Optional[str]]] = {
    # column names as the public metadata files spell them (img2dataset's dataset examples)
    "laion": {"url_col": "URL", "caption_col": "TEXT", "id_col": None},
    "cc12m": {"url_col": "url", "caption_col": "caption", "id_col": None},
    "datacomp": {"url_col": "url", "caption_col": "text", "id_col": "uid"},
}


class UrlsCorpusSpec(_RealCorpusSpec):
    """A Parquet / CSV / TSV / JSONL list of image URLs + captions, downloaded with img2dataset."""

    source: Literal["urls"]
    path: str
    format: Optional[Literal["parquet", "csv", "tsv", "jsonl"]] = None  # default: from the file name
    preset: Optional[Literal["laion", "cc12m", "datacomp"]] = None
    url_col: Optional[str] = None  # default: the preset's, else "url"
    caption_col: Optional[str] = None  # default: the preset's, else "caption"
    id_col: Optional[str] = None  # sample ids (must be unique); default: the preset's if present, else the row number
    title_col: Optional[str] = None
    tags_col: Optional[str] = None
    description_col: Optional[str] = None
    header: bool = True  # false: a CSV/TSV without a header row, columns url_col, caption_col (CC-12M's cc12m.tsv)
    resize_mode: Literal["border", "center_crop", "keep_ratio", "keep_ratio_largest", "no"] = "center_crop"
    encode_format: Literal["jpg", "png", "webp"] = "jpg"
    shard_size: int = Field(10000, ge=1, le=1_000_000)
    timeout: int = Field(10, ge=1)  # seconds per request
    max_image_mb: float = Field(32.0, gt=0)  # a larger download is refused (error_kind too_large), never read whole
    retries: int = Field(0, ge=0, le=10)  # img2dataset's immediate re-tries of a failed request
    retry_rounds: int = Field(1, ge=0, le=20)  # the retry step: re-fetch transient failures of finished shards
    retry_wait: float = Field(5.0, ge=0)  # seconds before each retry round (not part of the corpus key)
    # later retries: the corpus built with refetch = n re-fetches the transient failures of the one built with n - 1
    # (reusing its finished shards); a new corpus key, so the stages downstream see the new samples
    refetch: int = Field(0, ge=0, le=100)
    # how the download runs (not part of the corpus key: they cannot change what is downloaded)
    processes: int = Field(1, ge=1, le=256)
    threads: int = Field(16, ge=1, le=1024)

    def columns(self) -> dict[str, Optional[str]]:
        """url/caption/id column names after applying the preset."""
        preset = URL_PRESETS.get(self.preset or "", {})
        return {"url_col": self.url_col or preset.get("url_col") or "url",
                "caption_col": self.caption_col or preset.get("caption_col") or "caption",
                "id_col": self.id_col or preset.get("id_col")}


class WebdatasetCorpusSpec(_RealCorpusSpec):
    """Existing webdataset shards (.tar of <key>.jpg|png|webp + <key>.txt and/or <key>.json), e.g. img2dataset's."""

    source: Literal["webdataset"]
    path: str  # a directory of .tar shards, one .tar, or a glob pattern


class FolderCorpusSpec(_RealCorpusSpec):
    """ImageNet-Captions style: images in class folders + a JSON / JSONL / TSV of title, tags, description per file."""

    source: Literal["folder"]
    path: str
    metadata: Optional[str] = None  # default: PATH/metadata.json, .jsonl, .tsv or .csv


CORPUS_SOURCES: dict[str, type[_Strict]] = {"synthetic": CorpusSpec, "urls": UrlsCorpusSpec,
                                            "webdataset": WebdatasetCorpusSpec, "folder": FolderCorpusSpec}


class _CorpusSource(BaseModel):
    model_config = ConfigDict(extra="allow")
    source: Literal["synthetic", "urls", "webdataset", "folder"] = "synthetic"


def _corpus_source(value: Any) -> Any:
    """Dispatch a `corpus:` mapping on its `source` (default synthetic), so errors come from that source's model."""
    if isinstance(value, dict):
        source = _CorpusSource.model_validate(value).source  # an unknown source is an error at corpus.source
        return CORPUS_SOURCES[source].model_validate(value)
    if isinstance(value, BaseModel) and type(value) in CORPUS_SOURCES.values():
        return value
    raise ValueError(f"corpus must be a mapping with a source ({', '.join(CORPUS_SOURCES)})")


AnyCorpusSpec = Annotated[Union[CorpusSpec, UrlsCorpusSpec, WebdatasetCorpusSpec, FolderCorpusSpec],
                          BeforeValidator(_corpus_source)]


class MatchingSpec(_Strict):
    """How captions are matched to concepts (pipeline/matching): phrase | bag | semantic."""

    method: Literal["phrase", "bag", "semantic"] = "phrase"
    # semantic only: the caption <-> "name: definition" similarity a phrase candidate needs (default 0.45)
    threshold: Optional[float] = Field(None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _threshold_is_semantic(self) -> "MatchingSpec":
        if self.threshold is not None and self.method != "semantic":
            raise ValueError("threshold applies only to method semantic")
        return self

    def options(self) -> dict[str, Any]:
        """Keyword options of the matcher (make_matcher(method, vocab, **options))."""
        return {"threshold": self.threshold} if self.threshold is not None else {}


class EvalSpec(_Strict):
    per_class: int = Field(30, ge=1)  # the synthetic world's eval split; at most this many per class from `folder`
    # CLIP zero-shot prompts: the paper's 80 OpenAI ImageNet templates (averaged per class), or ours, "a {name}"
    prompts: Literal["a_cname", "templates"] = "templates"
    # one evaluation class list for every run of the study: 'all' target concepts, a named list ('imagenet100'), or
    # class names; CLIP scores all of them zero-shot, a supervised learner those of its head (the rest count as wrong)
    classes: Union[Literal["all"], Literal["imagenet100"], list[str]] = "all"
    # an ImageNet-style folder (one sub-folder per class, named by wnid/key or class name) for non-synthetic corpora.
    # It becomes part of the corpus artifact, so the corpus key hashes its content; excluded from this model's dump so
    # that evaluate keys (which hash the dump) stay as they were.
    folder: Optional[str] = Field(None, exclude=True)


class ExponentialProfile(_Strict):
    exponential: float = Field(ge=1)  # max/min count ratio


class MatchProfile(_Strict):
    match: str  # a shipped reference table, e.g. laion400m, incaps_imagenet_ori

    @field_validator("match")
    @classmethod
    def _table_exists(cls, value: str) -> str:
        from tailstudy.frequency import reference_tables

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
    # prefix the class name to natural-text variants so that every variant keeps the same samples (as the paper does)
    name_prefix: bool = True
    scale: float = Field(1.0, gt=0)  # <= 1: fraction of the pool; > 1: number of samples
    # 'all' | k (k random target classes) | a named list ('imagenet100') | a list of class names
    concepts: Union[int, str, list[str]] = "all"
    open_world: bool = False
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
        from tailstudy.curate import CAPTION_VARIANTS  # the variants' rules live with the curate stage

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
    # sl_sampled_vocab: build one vocabulary per chunk of this many samples (0 = one per batch)
    vocab_chunk: int = Field(0, ge=0)
    # supervised heads: the paper's cosine similarity to learned class prototypes (scale init 1/0.07, <= 100); ours: a
    # linear layer with bias; frozen_text: fixed MiniLM text embeddings of the class names + a trained projection
    head: Literal["cosine", "linear", "frozen_text"] = "cosine"
    # clip: text tower trained from scratch, or the packaged MiniLM sentence encoder frozen / fine-tuned
    text_tower: Literal["scratch", "minilm_frozen", "minilm_finetune"] = "scratch"
    # a cap on optimisation steps over the whole run (smoke checks); the schedule is cut, not rescaled
    max_steps: Optional[int] = Field(None, ge=1)
    # data loader worker processes (None: none for model inputs <= 64 px, else up to 4); any value gives the same
    # batches (tailstudy.data), so like `device`, `workers`, `compile` and `channels_last` are not part of a run's key
    workers: Optional[int] = Field(None, ge=0, le=64)
    compile: bool = False  # torch.compile the learner
    channels_last: bool = False  # channels-last memory format for images and the image tower
    # how many training runs may overlap on CPU (each in its own process, with cores / parallel torch threads);
    # on GPUs the executor runs one per visible GPU instead. Never part of a key: results do not depend on it.
    parallel: int = Field(1, ge=1)


class StudySpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    corpus: AnyCorpusSpec = CorpusSpec()
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
        from tailstudy.models import known_learners

        for learner in self.models:
            if learner not in known_learners():
                raise ValueError(f"models: unknown learner {learner!r} (known: {', '.join(known_learners())})")
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
        levels = [self.base] + [SubsetSpec.model_validate({**self.base.model_dump(), f: lvl})
                                for f, lvls in self.factors.items() for lvl in lvls]
        if self.matching.method != "semantic" and any(isinstance(lv.diversity, DiversityThreshold) for lv in levels):
            raise ValueError("diversity: {threshold: t} needs matching: {method: semantic} (it filters on the "
                             "semantic matcher's caption-definition similarity)")
        if not self.seeds:
            raise ValueError("seeds: needs at least one seed")
        for field_name, values in (("seeds", self.seeds), ("models", self.models)):
            repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
            if repeated is not None:  # a repeated seed would silently share one run and halve the replicates
                raise ValueError(f"{field_name}: {repeated!r} is listed twice")
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
    from tailstudy.preflight import load_yaml

    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))  # a repeated key is an error, not dropped
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text") from None
    return parse_spec(data, str(path))


def default_spec_path() -> Path:
    from tailstudy.paths import DATA_DIR

    return DATA_DIR / "studies" / "default.yaml"
