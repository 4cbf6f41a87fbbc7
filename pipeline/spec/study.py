"""The study: its sections (corpus, vocabulary, matching, evaluate, base, factors, learners, train, seeds), and
reading one from YAML."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from tailstudy.errors import SpecError
from tailstudy.models import COMMON_OPTIONS, known_learners, learner_options
from tailstudy.paths import DATA_DIR
from tailstudy.spec.base import Name, Seed, _first_error, _Strict
from tailstudy.spec.corpus import AnyCorpusSpec, CorpusSpec
from tailstudy.spec.subset import DiversityThreshold, SubsetSpec, level_label
from tailstudy.yamlfile import load_yaml


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


class EvaluateSpec(_Strict):
    """The `evaluate:` section: what every run is evaluated on, and how."""

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

    @field_validator("classes")
    @classmethod
    def _classes_not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("give 'all', 'imagenet100' or at least one class name")
        return value


class TrainSpec(_Strict):
    arch: str = "tiny"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.2, ge=0)  # open_clip's default (the paper's runs), on weights only (train.decays)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # sl_sampled_vocab: classes in the per-step vocabulary (present ones always included)
    num_to_sample: int = Field(16, ge=2)
    # how absent classes are drawn into the vocabulary: the paper's runs weigh them by frequency (linear)
    vocab_weights: Literal["uniform", "linear", "sqrt"] = "linear"
    # sl_sampled_vocab: build one vocabulary per chunk of this many samples (0 = one per batch)
    vocab_chunk: int = Field(0, ge=0)
    # supervised heads: the paper's cosine similarity to learned class prototypes (scale init 1/0.07, <= 100); ours: a
    # linear layer with bias; frozen_text: fixed text embeddings of the class names (text_head) + a trained
    # projection; ours: frozen_random, the same with fixed random prototypes (the control for frozen_text)
    head: Literal["cosine", "linear", "frozen_text", "frozen_random"] = "cosine"
    # a frozen text head's language: the packaged MiniLM, or the text tower of this study's CLIP trained on the base
    # subset with another seed (seed + 1000), whose language was learned from this world's captions
    text_head: Literal["minilm", "clip"] = "minilm"
    # clip: text tower trained from scratch, or the packaged MiniLM sentence encoder frozen / fine-tuned
    text_tower: Literal["scratch", "minilm_frozen", "minilm_finetune"] = "scratch"
    # a cap on optimisation steps over the whole run (smoke checks); the schedule is cut, not rescaled
    max_steps: Optional[int] = Field(None, ge=1)
    # data loader worker processes (None: none on a CPU, up to 4 beside a GPU: tailstudy.data.data_workers); any value
    # gives the same batches, so like `device`, `compile` and `channels_last` it is not part of a run's key
    workers: Optional[int] = Field(None, ge=0, le=64)
    compile: bool = False  # torch.compile the learner
    channels_last: bool = False  # channels-last memory format for images and the image tower
    # how many training runs may overlap on CPU, each in its own process (None: as many as there are cores, at most
    # 4); on GPUs the executor runs one per visible GPU instead. Never part of a key: results do not depend on it.
    parallel: Optional[int] = Field(None, ge=1, le=256)
    # torch threads of each training / evaluation process on CPU (None: the cores shared out over the processes that
    # run at once, at least 1 -- one per process on machines of up to 9 cores). Not part of a key, but torch's CPU
    # reductions sum per-thread chunks, so runs with other thread counts differ in the last bits: it is recorded in
    # each train artifact's manifest.
    threads: Optional[int] = Field(None, ge=1, le=1024)


class LearnerVariant(_Strict):
    """A learner under a name of its own: a registered `learner` with its own values of the train options it declares
    (e.g. the sampled-vocabulary size), trained on every cell, or only on the `levels` listed ('base' = the cells
    whose subset is the base subset, or 'factor=level')."""

    name: Name
    learner: str
    train: dict[str, Any] = {}
    levels: Optional[list[str]] = Field(None, min_length=1)


@dataclass(frozen=True)
class LearnerRun:
    """What a study trains under one learner name: the registered learner, its train options, where it runs."""

    name: str
    learner: str
    train: TrainSpec
    levels: Optional[tuple[str, ...]] = None

    def runs_on(self, cell, base: SubsetSpec) -> bool:
        if self.levels is None:
            return True
        return f"{cell.factor}={cell.level}" in self.levels or ("base" in self.levels and cell.subset == base)


class StudySpec(_Strict):
    name: Name
    corpus: AnyCorpusSpec = CorpusSpec()
    vocabulary: str = "imagenet1k"
    matching: MatchingSpec = MatchingSpec()
    evaluate: EvaluateSpec = EvaluateSpec()
    base: SubsetSpec = SubsetSpec()
    factors: dict[str, list[Any]] = {}
    grid: bool = False
    learners: list[Union[str, LearnerVariant]] = ["clip", "sl"]
    train: TrainSpec = TrainSpec()
    seeds: list[Seed] = [0]

    @model_validator(mode="after")
    def _check_factors_and_learners(self) -> "StudySpec":
        if not self.learners:
            raise ValueError("learners: needs at least one learner")
        for learner in self.learners:
            kind = learner if isinstance(learner, str) else learner.learner
            if kind not in known_learners():
                raise ValueError(f"learners: unknown learner {kind!r} (known: {', '.join(known_learners())})")
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
        names = [entry if isinstance(entry, str) else entry.name for entry in self.learners]
        for field_name, values in (("seeds", self.seeds), ("learners", names)):
            repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
            if repeated is not None:  # a repeated seed would silently share one run and halve the replicates
                raise ValueError(f"{field_name}: {repeated!r} is listed twice")
        cells = {"base"} | {f"{f}={level_label(lv)}" for f, lvls in self.factors.items() for lv in lvls}
        for i, entry in enumerate(self.learners):
            if not isinstance(entry, str):
                self._check_variant(entry, f"learners[{i}]", cells)
        return self

    def _check_variant(self, entry: LearnerVariant, where: str, cells: set[str]) -> None:
        own = [o for o in learner_options(entry.learner) if o not in COMMON_OPTIONS]
        for option in entry.train:
            if option not in own:  # a variant differs from its learner only in what that learner declares
                raise ValueError(f"{where}.train.{option}: not an option of learner {entry.learner!r} "
                                 f"(its options: {', '.join(own) or 'none'})")
        try:
            TrainSpec.model_validate({**self.train.model_dump(), **entry.train})
        except ValidationError as err:
            raise ValueError(f"{where}.train.{_first_error(err)}") from None
        unknown = [level for level in entry.levels or () if level not in cells]
        if unknown:
            raise ValueError(f"{where}.levels: {unknown[0]!r} is not a cell of this study (base, or one of "
                             f"{', '.join(sorted(cells - {'base'})) or 'no factor levels'})")

    def learner_runs(self) -> list[LearnerRun]:
        """Every learner of the study with its own train options (a plain name: the study's `train:` as it is)."""
        runs = []
        for entry in self.learners:
            if isinstance(entry, str):
                runs.append(LearnerRun(entry, entry, self.train))
            else:
                train = TrainSpec.model_validate({**self.train.model_dump(), **entry.train})
                runs.append(LearnerRun(entry.name, entry.learner, train,
                                       tuple(entry.levels) if entry.levels is not None else None))
        return runs

    def learner_run(self, name: str) -> LearnerRun:
        return next(run for run in self.learner_runs() if run.name == name)


# old spec keys -> their names now: one name per thing (`evaluate` is the stage, a learner is a learner). Specs that
# still use an old name are read as before, with one line on stderr; the parsed spec (and so every key) is the same.
RENAMED_KEYS = {"eval": "evaluate", "models": "learners"}
_said: set[tuple[str, str]] = set()


def _new_key_names(data: dict, source: str) -> dict:
    """`data` with old top-level keys under their new names; an old and a new name together is an error."""
    for old, new in RENAMED_KEYS.items():
        if old not in data:
            continue
        if new in data:
            raise SpecError(f"{source}: both {new}: and {old}: (its old name) are given; keep {new}: only")
        if (source, old) not in _said:  # once per spec and process, however often it is parsed
            _said.add((source, old))
            sys.stderr.write(f"{source}: '{old}:' is deprecated, call it '{new}:' (read the same)\n")
        data = {new if key == old else key: value for key, value in data.items()}
    return data


def parse_spec(data: Any, source: str = "spec") -> StudySpec:
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a study spec must be a YAML mapping")
    data = _new_key_names(data, source)
    try:
        return StudySpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(f"{source}: {_first_error(err)}") from None


def load_spec(path: str | Path) -> StudySpec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))  # a repeated key is an error, not dropped
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not UTF-8 text") from None
    return parse_spec(data, str(path))


def default_spec_path() -> Path:
    return DATA_DIR / "studies" / "default.yaml"
