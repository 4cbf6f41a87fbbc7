"""WordNet 3.0 noun lemmatisation (morphy), from the compact tables shipped in data/vocab/.

``lemmatise(word)`` follows WordNet's morphy for nouns as NLTK's ``WordNetLemmatizer().lemmatize(word)`` (NLTK >= 3.9)
does it, which is the lemmatiser the paper counts with:

1. candidates = the word itself, then either its bases from the noun exception list (``noun.exc``), when it has an
   entry, or else the results of one round of the noun suffix rules (s->'', ses->s, ves->f, xes->x, zes->z, ch-es,
   sh-es, men->man, ies->y);
2. keep the candidates that are noun lemmas of WordNet;
3. the shortest one wins (the first on a tie); none left -> the word unchanged.

Because one round of rules is applied, the surface forms of a lemma are finite; ``surface_forms`` enumerates them, so
a matcher can look tokens up instead of lemmatising every token of every caption.

Tables: derived by data/vocab/build_wordnet_tables.py (WordNet 3.0 Copyright 2006 by Princeton University).
"""
from __future__ import annotations

import gzip
from functools import lru_cache

from tailstudy.paths import DATA_DIR

NOUN_RULES: tuple[tuple[str, str], ...] = (
    ("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
    ("ies", "y"),
)
LEMMAS_FILE = DATA_DIR / "vocab" / "wordnet_noun_lemmas.txt.gz"
EXCEPTIONS_FILE = DATA_DIR / "vocab" / "wordnet_noun_exceptions.tsv"


class NounLemmatiser:
    """morphy for nouns over letters-only words (the only tokens the paper's tokeniser produces)."""

    def __init__(self, lemmas: frozenset[str], exceptions: dict[str, tuple[str, ...]]):
        self.lemmas = lemmas
        self.exception_bases = exceptions  # inflected form -> the bases noun.exc lists for it
        self.exceptions: dict[str, str] = {}  # inflected form -> its lemma
        for form, bases in exceptions.items():
            found = [b for b in dict.fromkeys([form, *bases]) if b in lemmas]
            self.exceptions[form] = min(found, key=len) if found else form
        self._by_lemma: dict[str, list[str]] = {}
        for form, lemma in self.exceptions.items():
            self._by_lemma.setdefault(lemma, []).append(form)

    def irregular_plurals(self, word: str) -> list[str]:
        """Forms that noun.exc lists with `word` among their bases (mouse -> mice, axis -> axes), sorted."""
        return irregular_plurals(word)

    def lemmatise(self, word: str) -> str:
        if word in self.exceptions:
            return self.exceptions[word]
        best = word if word in self.lemmas else None
        for old, new in NOUN_RULES:
            if word.endswith(old):
                form = word[: len(word) - len(old)] + new
                if form in self.lemmas and (best is None or len(form) < len(best)):
                    best = form
        return best if best is not None else word

    def surface_forms(self, lemma: str) -> list[str]:
        """Every word whose lemma is `lemma` (sorted): the lemma itself, exception-list forms, one-rule inflections."""
        candidates = {lemma, *self._by_lemma.get(lemma, ())}
        for old, new in NOUN_RULES:
            if lemma.endswith(new):
                candidates.add(lemma[: len(lemma) - len(new)] + old)
        return sorted(w for w in candidates if w and self.lemmatise(w) == lemma)


@lru_cache(maxsize=1)
def noun_exceptions() -> dict[str, tuple[str, ...]]:
    """noun.exc: inflected form -> its bases."""
    exceptions = {}
    for line in EXCEPTIONS_FILE.read_text(encoding="ascii").splitlines():
        form, bases = line.split("\t")
        exceptions[form] = tuple(bases.split())
    return exceptions


@lru_cache(maxsize=1)
def _plurals() -> dict[str, list[str]]:
    plurals: dict[str, list[str]] = {}
    for form, bases in noun_exceptions().items():
        for base in bases:
            plurals.setdefault(base, []).append(form)
    return plurals


def irregular_plurals(word: str) -> list[str]:
    """Forms that noun.exc lists with `word` among their bases (mouse -> mice), sorted. Reads only the exception list,
    not the lemma table, so building a phrase matcher stays cheap."""
    return sorted(_plurals().get(word, ()))


@lru_cache(maxsize=1)
def noun_lemmatiser() -> NounLemmatiser:
    with gzip.open(LEMMAS_FILE, "rt", encoding="ascii") as fh:
        lemmas = frozenset(line.strip() for line in fh if line.strip())
    return NounLemmatiser(lemmas, noun_exceptions())
