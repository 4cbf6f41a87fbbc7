"""Phrase matching: whole-word, case-insensitive occurrences of every synonym and its plurals, with negative words.

The rule, caption by caption (captions and synonyms both go through ``tailstudy.text.normalise``):

- a caption matches a concept when one of the concept's synonyms, or a synonym whose last word is replaced by a plural
  of it (the regular English plural, and the irregular plurals WordNet's exception list gives: mouse -> mice), occurs
  in the normalised caption as a run of whole words;
- unless one of the concept's negative words (also with its plurals) occurs as whole words anywhere in the caption.

All captions of a batch are normalised at once (``tailstudy.text.normalised``) and joined into one buffer, " words \n"
per caption; every pattern " form " (spaces around: whole words only) is then found in one overlapping Aho-Corasick
pass of ahocorasick_rs, a binding of Rust's aho-corasick crate.
"""
from __future__ import annotations

from itertools import chain

import ahocorasick_rs
import numpy as np
import pyarrow.compute as pc

from tailstudy.matching.base import Captions, Csr, MatchOne, MatchResult, drop_pairs, empty_result, unique_pairs
from tailstudy.matching.wordnet import irregular_plurals
from tailstudy.text import EMPTY, NEWLINE, NORMALISER_VERSION, SPACE, normalise, normalised
from tailstudy.vocab import Vocabulary

PHRASE_VERSION = 2
_SIBILANT_ENDINGS = ("s", "x", "z", "ch", "sh")


def regular_plural(word: str) -> str:
    if word.endswith(_SIBILANT_ENDINGS):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


def inflections(phrase: str) -> list[str]:
    """The phrase, then the phrase with its last word replaced by its regular plural, then by each irregular plural
    WordNet lists for it (a normalised phrase in, distinct phrases out)."""
    head, _, last = phrase.rpartition(" ")
    prefix = f"{head} " if head else ""
    forms = [last, regular_plural(last), *irregular_plurals(last)]
    return list(dict.fromkeys(prefix + form for form in forms))


class PhraseMatcher(MatchOne):
    method = "phrase"
    version = f"phrase{PHRASE_VERSION}-norm{NORMALISER_VERSION}"

    def __init__(self, vocab: Vocabulary):
        positive: dict[str, set[int]] = {}
        negative: dict[str, set[int]] = {}
        for concept in vocab.concepts:
            for table, phrases in ((positive, concept.synonyms), (negative, concept.negatives)):
                for phrase in phrases:
                    norm = normalise(phrase)
                    for form in inflections(norm) if norm else ():
                        table.setdefault(form, set()).add(concept.concept_id)
        self.patterns = sorted(set(positive) | set(negative))  # normalised forms; a hit reports the index here
        self.positive = Csr([sorted(positive.get(p, ())) for p in self.patterns])
        self.negative = Csr([sorted(negative.get(p, ())) for p in self.patterns])
        self.has_negatives = bool(negative)
        self.n_ids = max((c.concept_id for c in vocab.concepts), default=0) + 1
        self._build()

    def _build(self) -> None:
        # the contiguous NFA: of the three automata the crate offers, the fastest on bench_match.py's captions
        self.automaton = ahocorasick_rs.BytesAhoCorasick([f" {p} ".encode() for p in self.patterns],
                                                         implementation=ahocorasick_rs.Implementation.ContiguousNFA)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "automaton"}  # the automaton does not pickle

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._build()

    def hits(self, captions: Captions) -> tuple[np.ndarray, np.ndarray]:
        """(row, pattern index) of every occurrence of every pattern, in the order found."""
        # " words \n" per caption: a pattern " form " matches whole words only, and never across two captions
        text = pc.binary_join_element_wise(EMPTY, normalised(captions), NEWLINE, SPACE)
        if len(text) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        _validity, offsets, data = text.buffers()
        starts = np.frombuffer(offsets, np.int32, len(text) + 1, text.offset * 4).astype(np.int64)
        haystack = np.frombuffer(data, np.uint8)[starts[0]: starts[-1]]
        found = self.automaton.find_matches_as_indexes(haystack, overlapping=True)  # (pattern, start, end)
        hits = np.fromiter(chain.from_iterable(found), np.int64, 3 * len(found)).reshape(-1, 3)
        return np.searchsorted(starts - starts[0], hits[:, 1], "right") - 1, hits[:, 0]

    def match(self, captions: Captions) -> MatchResult:
        hit_rows, hit_patterns = self.hits(captions)
        if len(hit_rows) == 0:
            return empty_result()
        rows, ids = unique_pairs(*self.positive.expand(hit_rows, hit_patterns), self.n_ids)
        if self.has_negatives:
            neg_rows, neg_ids = self.negative.expand(hit_rows, hit_patterns)
            rows, ids = drop_pairs(rows, ids, neg_rows, neg_ids, self.n_ids)
        return rows, ids.astype(np.int32), np.ones(len(rows), np.float32)
