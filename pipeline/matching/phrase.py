"""Whole-word phrase matching of every synonym (and its plural) in one Aho-Corasick pass per caption."""
from __future__ import annotations

from typing import Sequence

import ahocorasick
import numpy as np

from pipeline.text import NORMALISER_VERSION, normalise
from pipeline.vocab import Vocabulary

PHRASE_VERSION = 1
_SIBILANT_ENDINGS = ("s", "x", "z", "ch", "sh")


def inflections(phrase: str) -> list[str]:
    """The phrase and the plural of its last word (regular English rules; irregular plurals are not guessed)."""
    head, _, last = phrase.rpartition(" ")
    prefix = f"{head} " if head else ""
    if last.endswith(_SIBILANT_ENDINGS):
        plural = last + "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return [phrase, prefix + plural]


class PhraseMatcher:
    method = "phrase"
    version = f"phrase{PHRASE_VERSION}-norm{NORMALISER_VERSION}"

    def __init__(self, vocab: Vocabulary):
        self.automaton = ahocorasick.Automaton()
        owners: dict[str, set[int]] = {}
        for concept in vocab.concepts:
            for synonym in concept.synonyms:
                norm = normalise(synonym)
                if not norm:
                    continue
                for form in inflections(norm):
                    owners.setdefault(f" {form} ", set()).add(concept.concept_id)
        for pattern, ids in owners.items():
            self.automaton.add_word(pattern, tuple(sorted(ids)))
        self.automaton.make_automaton()
        self.negatives = {
            c.concept_id: [f" {normalise(n)} " for n in c.negatives if normalise(n)] for c in vocab.concepts if c.negatives
        }

    def match_one(self, caption: str | None) -> list[int]:
        text = f" {normalise(caption)} "
        if len(text) <= 2:
            return []
        found: set[int] = set()
        for _end, ids in self.automaton.iter(text):
            found.update(ids)
        if self.negatives and found:
            found = {cid for cid in found if not any(neg in text for neg in self.negatives.get(cid, ()))}
        return sorted(found)

    def match(self, captions: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows: list[int] = []
        ids: list[int] = []
        for row, caption in enumerate(captions):
            for cid in self.match_one(caption):
                rows.append(row)
                ids.append(cid)
        return np.asarray(rows, np.int64), np.asarray(ids, np.int32), np.ones(len(ids), np.float32)
