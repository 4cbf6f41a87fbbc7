"""Concept vocabularies: the shipped ImageNet-1k one, or a user's CSV / JSON / YAML file."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import yaml

from pipeline.errors import InputError
from pipeline.paths import DATA_DIR

VOCAB_DIR = DATA_DIR / "vocab"


@dataclass(frozen=True)
class Concept:
    concept_id: int
    key: str
    name: str
    synonyms: tuple[str, ...]
    definition: str | None = None
    negatives: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Vocabulary:
    name: str
    concepts: tuple[Concept, ...]

    def __len__(self) -> int:
        return len(self.concepts)

    def by_id(self) -> dict[int, Concept]:
        return {c.concept_id: c for c in self.concepts}

    def to_table(self) -> pa.Table:
        return pa.table(
            {
                "vocab": pa.array([self.name] * len(self.concepts), pa.string()),
                "concept_id": pa.array([c.concept_id for c in self.concepts], pa.int32()),
                "key": pa.array([c.key for c in self.concepts], pa.string()),
                "name": pa.array([c.name for c in self.concepts], pa.string()),
                "synonyms": pa.array([list(c.synonyms) for c in self.concepts], pa.list_(pa.string())),
                "definition": pa.array([c.definition for c in self.concepts], pa.string()),
                "negatives": pa.array([list(c.negatives) for c in self.concepts], pa.list_(pa.string())),
            }
        )

    def content(self) -> list[dict]:
        """What the vocabulary's stage key hashes: every field that can change a match."""
        return [
            [c.concept_id, c.key, c.name, list(c.synonyms), c.definition, list(c.negatives)] for c in self.concepts
        ]


def imagenet1k() -> Vocabulary:
    """ImageNet-1k in standard class order (sorted wnids); synonyms as the paper counts them.

    Source: Wen et al. 2024, CVMI-Lab/clip-beyond-tail (MIT), data/vocab/descriptors_imagenet_synset.json; display
    names are the CLIP class names of data/vocab/descriptors_imagenet.json, in the same order.
    """
    synsets = json.loads((VOCAB_DIR / "descriptors_imagenet_synset.json").read_text())
    names = list(json.loads((VOCAB_DIR / "descriptors_imagenet.json").read_text()))
    concepts = []
    for idx, (wnid, synonyms) in enumerate(synsets.items()):
        syns = tuple(dict.fromkeys([names[idx].lower(), *(s.lower() for s in synonyms)]))
        concepts.append(Concept(idx, wnid, names[idx], syns))
    return Vocabulary("imagenet1k", tuple(concepts))


BUILTIN_VOCABS = {"imagenet1k": imagenet1k}


def load_vocab(name_or_path: str) -> Vocabulary:
    if name_or_path in BUILTIN_VOCABS:
        return BUILTIN_VOCABS[name_or_path]()
    path = Path(name_or_path)
    if not path.is_file():
        known = ", ".join(BUILTIN_VOCABS)
        raise InputError(f"{name_or_path}: no such vocabulary file (built-in vocabularies: {known})")
    rows = _read_rows(path)
    concepts = [_row_to_concept(path, i, row) for i, row in enumerate(rows)]
    if not concepts:
        raise InputError(f"{path}: vocabulary is empty")
    names = [c.name.lower() for c in concepts]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InputError(f"{path}: row {i + 1}: duplicate concept name {concepts[i].name!r}")
    return Vocabulary(path.stem, tuple(concepts))


def _read_rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheet exports start with a byte-order mark
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    try:
        if suffix in (".csv", ".tsv"):
            return list(csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
        if suffix == ".json":
            data = json.loads(text) if text.strip() else []
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or []
        else:
            raise InputError(f"{path}: unsupported vocabulary format (use .csv, .tsv, .json or .yaml)")
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise InputError(f"{path}: cannot parse: {str(err).splitlines()[0]}") from None
    if isinstance(data, dict) and "concepts" in data:
        data = data["concepts"]
    if isinstance(data, dict):  # {name: [synonyms]} shorthand
        data = [{"name": k, "synonyms": v} for k, v in data.items()]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of concepts")
    return data


def _as_list(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [s.strip() for s in value.split("|") if s.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ValueError("must be a list of strings or a '|'-separated string")


def _row_to_concept(path: Path, index: int, row) -> Concept:
    where = f"{path}: row {index + 1}"
    if isinstance(row, str):
        row = {"name": row}
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a mapping with a 'name' field")
    name = str(row.get("name") or "").strip()
    if not name:
        raise InputError(f"{where}: field 'name' is missing or empty")
    try:
        synonyms = _as_list(row.get("synonyms"))
        negatives = _as_list(row.get("negatives"))
    except ValueError as err:
        raise InputError(f"{where}: field 'synonyms'/'negatives' {err}") from None
    unknown = set(row) - {"name", "synonyms", "definition", "negatives", "key", "concept_id"}
    if unknown:
        raise InputError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    definition = row.get("definition") or None
    syns = tuple(dict.fromkeys([name.lower(), *(s.lower() for s in synonyms)]))
    return Concept(index, str(row.get("key") or name), name, syns, definition, tuple(n.lower() for n in negatives))
