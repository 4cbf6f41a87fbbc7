"""Phrase matching: whole-word, case-insensitive occurrences of every synonym and its plurals, with negative words.

The rule, caption by caption (captions and synonyms both go through ``tailstudy.text.normalise``):

- a caption matches a concept when one of the concept's synonyms, or a synonym whose last word is replaced by a plural
  of it (the regular English plural, and the irregular plurals WordNet's exception list gives: mouse -> mice), occurs
  in the normalised caption as a run of whole words;
- unless one of the concept's negative words (also with its plurals) occurs as whole words anywhere in the caption.

All captions of a batch are tokenised at once (Arrow) and every pattern is found in one trie walk: compiled, or
vectorised with numpy where the C extension is not built (tailstudy.matching.trie).
"""
from __future__ import annotations

import numpy as np

from tailstudy.matching.base import Captions, Csr, MatchOne, MatchResult, drop_pairs, empty_result, unique_pairs
from tailstudy.matching.trie import WordTrie
from tailstudy.matching.wordnet import irregular_plurals
from tailstudy.text import NORMALISER_VERSION, PHRASE_LUT, compiled_folder, normalise, phrase_text
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

    def __init__(self, vocab: Vocabulary, compiled: bool = True):
        """compiled=False: the numpy path even where the compiled core is built (same matches; benchmarks, tests)."""
        positive: dict[tuple[str, ...], set[int]] = {}
        negative: dict[tuple[str, ...], set[int]] = {}
        for concept in vocab.concepts:
            for table, phrases in ((positive, concept.synonyms), (negative, concept.negatives)):
                for phrase in phrases:
                    norm = normalise(phrase)
                    for form in inflections(norm) if norm else ():
                        table.setdefault(tuple(form.split()), set()).add(concept.concept_id)
        patterns = sorted(set(positive) | set(negative))
        self.trie = WordTrie(patterns, compiled)
        self.positive = Csr([sorted(positive.get(p, ())) for p in patterns])
        self.negative = Csr([sorted(negative.get(p, ())) for p in patterns])
        self.has_negatives = bool(negative)
        self.n_ids = max((c.concept_id for c in vocab.concepts), default=0) + 1
        if self.trie.compiled:
            compiled_folder()  # its tables are built here, once: forked match workers inherit them

    def match(self, captions: Captions) -> MatchResult:
        hit_rows, hit_patterns = self.trie.find_text(phrase_text(captions, self.trie.compiled), PHRASE_LUT)
        if len(hit_rows) == 0:
            return empty_result()
        rows, ids = unique_pairs(*self.positive.expand(hit_rows, hit_patterns), self.n_ids)
        if self.has_negatives:
            neg_rows, neg_ids = self.negative.expand(hit_rows, hit_patterns)
            rows, ids = drop_pairs(rows, ids, neg_rows, neg_ids, self.n_ids)
        return rows, ids.astype(np.int32), np.ones(len(rows), np.float32)
