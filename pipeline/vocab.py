"""Concept vocabularies: the shipped ones (imagenet1k, imagenet100, and the class lists of CUB, Food-101, Flowers-102,
Oxford Pets, DTD, Places365, EuroSAT, Stanford Cars, FGVC-Aircraft), or a user's CSV / TSV / JSON / YAML file."""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from tailstudy.arrays import arrow_ints, arrow_list_of_strings, arrow_optional_strings, arrow_repeat
from tailstudy.errors import InputError
from tailstudy.paths import DATA_DIR
from tailstudy.text import normalise
from tailstudy.yamlfile import load_yaml

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
        """The concepts as a table (built through tailstudy.arrays: no pandas import on `tailstudy match`)."""
        concepts = self.concepts
        return pa.table(
            {
                "vocab": arrow_repeat(self.name, len(concepts)),
                "concept_id": arrow_ints([c.concept_id for c in concepts], np.int32),
                "key": arrow_optional_strings([c.key for c in concepts]),
                "name": arrow_optional_strings([c.name for c in concepts]),
                "synonyms": arrow_list_of_strings([list(c.synonyms) for c in concepts]),
                "definition": arrow_optional_strings([c.definition for c in concepts]),
                "negatives": arrow_list_of_strings([list(c.negatives) for c in concepts]),
            }
        )

    def content(self) -> list[dict]:
        """What the vocabulary's stage key hashes: every field that can change a match."""
        return [
            [c.concept_id, c.key, c.name, list(c.synonyms), c.definition, list(c.negatives)] for c in self.concepts
        ]


@lru_cache(maxsize=None)
def imagenet1k() -> Vocabulary:
    """ImageNet-1k in standard class order (sorted wnids): display name, synonyms, WordNet definition, negatives.

    Synonyms: the CLIP display name (data/vocab/descriptors_imagenet.json) followed by the synonym list the paper counts
    with (descriptors_imagenet_synset.json), lower-cased. Negatives: the words the paper uses to reject captions of its
    nine ambiguous classes (imagenet1k_negatives.tsv). Definitions: WordNet 3.0 glosses (imagenet1k_definitions.tsv).
    Sources: Wen et al. 2024, CVMI-Lab/clip-beyond-tail (MIT); WordNet 3.0 (Princeton University).
    """
    synsets = json.loads((VOCAB_DIR / "descriptors_imagenet_synset.json").read_text())
    names = list(json.loads((VOCAB_DIR / "descriptors_imagenet.json").read_text()))
    definitions = dict(_tsv_rows(VOCAB_DIR / "imagenet1k_definitions.tsv"))
    negatives = {wnid: tuple(words.split("|"))
                 for wnid, _keyword, words in _tsv_rows(VOCAB_DIR / "imagenet1k_negatives.tsv")[1:]}
    concepts = []
    for idx, (wnid, synonyms) in enumerate(synsets.items()):
        syns = tuple(dict.fromkeys([names[idx].lower(), *(s.lower() for s in synonyms)]))
        concepts.append(Concept(idx, wnid, names[idx], syns, definitions[wnid], negatives.get(wnid, ())))
    return Vocabulary("imagenet1k", tuple(concepts))


@lru_cache(maxsize=None)
def imagenet100() -> Vocabulary:
    """The ImageNet-100 subset of CMC (Tian et al. 2020) used by the paper; concept ids stay ImageNet-1k indices."""
    idxs = [int(x) for x in (VOCAB_DIR / "imagenet100_idxs.txt").read_text().split()]
    concepts = imagenet1k().concepts
    return Vocabulary("imagenet100", tuple(concepts[i] for i in idxs))


def paper_synonyms(name: str) -> tuple[str, ...]:
    """A class name as the paper turns it into synonyms: lower case, "(...)" dropped, split on " or " and " / "."""
    text = re.sub(r"\([^)]*\)", "", name.lower())
    return tuple(dict.fromkeys(part.strip() for part in re.split(" or | / ", text) if part.strip()))


def descriptor_vocab(name: str, dataset: str) -> Vocabulary:
    """A downstream dataset's classes in class order (data/vocab/descriptors_<dataset>.json: class name -> visual
    descriptions, Menon & Vondrick 2023 as shipped by Wen et al. 2024). concept_id = class index, key = name = the class
    name, synonyms as the paper derives them (with its replacements, synonym_overrides.json), definition = the
    descriptions joined."""
    descriptors = json.loads((VOCAB_DIR / f"descriptors_{dataset}.json").read_text())
    overrides = json.loads((VOCAB_DIR / "synonym_overrides.json").read_text()).get(dataset, {})
    concepts = []
    for idx, (cname, descriptions) in enumerate(descriptors.items()):
        synonyms = tuple(overrides[cname]) if cname in overrides else paper_synonyms(cname)
        concepts.append(Concept(idx, cname, cname, synonyms, ", ".join(descriptions) or None))
    return Vocabulary(name, tuple(concepts))


# name -> dataset file of data/vocab/descriptors_<dataset>.json
DESCRIPTOR_VOCABS = {"cub": "cub", "food101": "food101", "flowers102": "flowers102", "pets": "pets", "dtd": "dtd",
                     "places365": "places365", "eurosat": "eurosat", "cars": "cars", "aircraft": "fgvcaircraft"}
BUILTIN_VOCABS: dict[str, Callable[[], Vocabulary]] = {
    "imagenet1k": imagenet1k,
    "imagenet100": imagenet100,
    **{name: lru_cache(maxsize=None)(partial(descriptor_vocab, name, dataset))
       for name, dataset in DESCRIPTOR_VOCABS.items()},
}


def _tsv_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line]


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
            data = load_yaml(text, str(path), InputError) or []
        else:
            raise InputError(f"{path}: unsupported vocabulary format (use .csv, .tsv, .json or .yaml)")
    except json.JSONDecodeError as err:  # load_yaml reports its own errors (and is imported only for YAML)
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
    if definition is not None and not isinstance(definition, str):
        raise InputError(f"{where}: field 'definition' must be text, not {type(definition).__name__}")
    if not normalise(name):  # e.g. only punctuation: the matcher's normaliser leaves nothing that could ever match
        raise InputError(f"{where}: concept name {name!r} has no letters or digits, so it can never match a caption")
    syns = tuple(dict.fromkeys([name.lower(), *(s.lower() for s in synonyms)]))
    return Concept(index, str(row.get("key") or name), name, syns, definition, tuple(n.lower() for n in negatives))
