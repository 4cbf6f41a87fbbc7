"""The `corpus:` section: the synthetic world (`CorpusSpec`) or a real source (urls / webdataset / folder), chosen by
its `source` key."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_serializer

from tailstudy.frequency import reference_tables
from tailstudy.spec.base import Seed, _Strict


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
    seed: Seed = 0
    # 4: world 3 whose named titles put the name inside web alt-text phrasings ("a photo of my {name}"), so the
    # paper's 80 prompt templates are in distribution; 3: concept families follow the WordNet hierarchy (semantic
    # siblings look alike, so names carry visual information); 2: families of random concepts. Older worlds keep their
    # corpus keys (world 2's dump omits it).
    world: Literal[2, 3, 4] = 4

    @field_validator("profile", mode="before")
    @classmethod
    def _known_profile(cls, value: Any) -> Any:
        """A named profile is a shipped reference table (found now, not when the corpus stage reads it); a mapping is
        {zipf: a}, checked as such (so its error is not the str branch's)."""
        if isinstance(value, dict):
            return ZipfProfile.model_validate(value)
        if isinstance(value, str) and value != "uniform":
            known = reference_tables()
            if value not in known and f"{value}_imagenet_ori" not in known:
                raise ValueError(f"unknown profile {value!r} (uniform, {{zipf: a}}, or a reference table: "
                                 "laion400m, metaclip_400m, cc12m, ...)")
        return value

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
    seed: Seed = 0  # seeds the curate stage's draws, as for the synthetic world

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
    timeout: int = Field(10, ge=1, le=3600)  # seconds per request
    max_image_mb: float = Field(32.0, gt=0)  # a larger download is refused (error_kind too_large), never read whole
    retries: int = Field(0, ge=0, le=10)  # img2dataset's immediate re-tries of a failed request
    retry_rounds: int = Field(1, ge=0, le=20)  # the retry step: re-fetch transient failures of finished shards
    retry_wait: float = Field(5.0, ge=0, le=86400)  # seconds before each retry round (not part of the corpus key)
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
