"""Direct, per-class implementations of the phrase and bag rules: one caption at a time, one concept at a time.

They are the rules written down as plainly as possible (the bag one is the loop of the paper's counting script), used
as the specification the fast matchers are tested against and as the benchmark's baseline. Never used for real work.
"""
from __future__ import annotations

from typing import Iterable

from tailstudy.matching.bag import concept_rules
from tailstudy.matching.phrase import inflections
from tailstudy.matching.wordnet import noun_lemmatiser
from tailstudy.text import normalise, paper_words
from tailstudy.vocab import Vocabulary


class NaivePhrase:
    """For each caption, for each concept: is " form " a substring of " normalised caption "?"""

    def __init__(self, vocab: Vocabulary):
        def forms(phrases: Iterable[str]) -> list[str]:
            return [f" {f} " for p in phrases if normalise(p) for f in inflections(normalise(p))]

        self.rules = [(c.concept_id, forms(c.synonyms), forms(c.negatives)) for c in vocab.concepts]

    def match_one(self, caption: str | None) -> list[int]:
        text = f" {normalise(caption)} "
        found = []
        for concept_id, positive, negative in self.rules:
            if any(f in text for f in positive) and not any(f in text for f in negative):
                found.append(concept_id)
        return sorted(found)


class NaiveBag:
    """The paper's loop: caption -> set of noun lemmas; for each class, reject on any negative lemma, else match when
    all lemmas of any synonym are in the set."""

    def __init__(self, vocab: Vocabulary):
        self.lemmatiser = noun_lemmatiser()
        self.rules = [(c.concept_id, *concept_rules(c, self.lemmatiser)) for c in vocab.concepts]

    def match_one(self, caption: str | None) -> list[int]:
        tokens = {self.lemmatiser.lemmatise(w) for w in paper_words(caption)}
        found = []
        for concept_id, synonyms, rejecting in self.rules:
            if any(w in tokens for w in rejecting):
                continue
            if any(all(w in tokens for w in synonym) for synonym in synonyms):
                found.append(concept_id)
        return sorted(found)


NAIVE = {"phrase": NaivePhrase, "bag": NaiveBag}
