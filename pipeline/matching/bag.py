"""Bag-of-lemmas matching: the rule Wen et al. (2024) count concept frequencies with.

The rule, caption by caption:

- caption lemmas: ``tailstudy.text.paper_words`` (lower case, non-letters -> spaces, NLTK's contraction splits), each
  word lemmatised as a noun by WordNet's morphy (``tailstudy.matching.wordnet``); a set;
- synonym lemmas: the synonym lower-cased, "(...)" removed, then the same words and lemmas;
- a caption matches a concept when all lemmas of at least one of its synonyms are in the caption's set, anywhere and in
  any order, unless a lemma of any word of any of the concept's negative phrases is in the set (the paper rejects on
  *any* word of a negative phrase: "random access" rejects on "random" alone);
- a synonym without letters has no lemmas; the paper's loop would match it to every caption, here it never matches.

Vectorised: every word whose lemma the vocabulary uses is known in advance (morphy applies one round of suffix rules,
so a lemma's surface forms are finite), so captions are tokenised at once and their words looked up in one hash
look-up (Arrow's index_in), never lemmatised.
"""
from __future__ import annotations

import re

import numpy as np
import pyarrow.compute as pc

from tailstudy.matching.base import (Captions, Csr, MatchOne, MatchResult, arrow_strings, drop_pairs, empty_result,
                                   numpy_ints, ranges, unique_pairs)
from tailstudy.matching.wordnet import NounLemmatiser, noun_lemmatiser
from tailstudy.text import PAPER_CONTRACTIONS, PAPER_TOKENISER_VERSION, paper_tokens, paper_words
from tailstudy.vocab import Concept, Vocabulary

BAG_VERSION = 1
_PARENTHESES = re.compile(r"\([^)]*\)")


def phrase_lemmas(phrase: str, lemmatiser: NounLemmatiser | None = None) -> tuple[str, ...]:
    """The distinct lemmas of a synonym or negative phrase, in order of first occurrence."""
    lemmatiser = lemmatiser or noun_lemmatiser()
    words = paper_words(_PARENTHESES.sub("", phrase.lower()))
    return tuple(dict.fromkeys(lemmatiser.lemmatise(w) for w in words))


def concept_rules(concept: Concept, lemmatiser: NounLemmatiser | None = None
                  ) -> tuple[list[tuple[str, ...]], set[str]]:
    """(lemma tuples of the synonyms that have letters, every lemma that rejects the concept)."""
    synonyms = [lemmas for s in concept.synonyms if (lemmas := phrase_lemmas(s, lemmatiser))]
    rejecting = {lemma for n in concept.negatives for lemma in phrase_lemmas(n, lemmatiser)}
    return list(dict.fromkeys(synonyms)), rejecting


class BagMatcher(MatchOne):
    method = "bag"
    version = f"bag{BAG_VERSION}-tok{PAPER_TOKENISER_VERSION}-wordnet3.0"

    def __init__(self, vocab: Vocabulary):
        lemmatiser = noun_lemmatiser()
        lemma_id: dict[str, int] = {}
        synonym_lemmas: list[list[int]] = []
        synonym_owner: list[int] = []
        rejects: dict[int, set[int]] = {}
        for concept in vocab.concepts:
            synonyms, rejecting = concept_rules(concept, lemmatiser)
            for lemmas in synonyms:
                synonym_lemmas.append(sorted({lemma_id.setdefault(x, len(lemma_id)) for x in lemmas}))
                synonym_owner.append(concept.concept_id)
            for x in rejecting:
                rejects.setdefault(lemma_id.setdefault(x, len(lemma_id)), set()).add(concept.concept_id)
        # every caption word whose lemma is one of ours -> that lemma; a contraction word -> the lemmas of its parts
        surface: dict[str, set[int]] = {}
        for lemma, index in lemma_id.items():
            for word in lemmatiser.surface_forms(lemma):
                if word not in PAPER_CONTRACTIONS:
                    surface.setdefault(word, set()).add(index)
        for word, parts in PAPER_CONTRACTIONS.items():
            ids = {lemma_id[x] for x in (lemmatiser.lemmatise(p) for p in parts) if x in lemma_id}
            if ids:
                surface[word] = ids
        words = sorted(surface)
        self.words = arrow_strings(words)
        self.word_lemmas = Csr([sorted(surface[w]) for w in words])
        self.synonym_owner = np.asarray(synonym_owner, np.int64)
        # one-lemma synonyms match on their lemma alone; a longer one is checked where its rarest lemma occurs
        uses = np.bincount([x for lemmas in synonym_lemmas for x in lemmas], minlength=len(lemma_id))
        single: list[set[int]] = [set() for _ in lemma_id]
        trigger: list[list[int]] = [[] for _ in lemma_id]
        others: list[list[int]] = []
        for index, lemmas in enumerate(synonym_lemmas):
            rarest = min(lemmas, key=lambda x: (uses[x], x))
            if len(lemmas) == 1:
                single[rarest].add(synonym_owner[index])
            else:
                trigger[rarest].append(index)
            others.append([x for x in lemmas if x != rarest])
        self.single = Csr([sorted(x) for x in single])
        self.trigger = Csr(trigger)
        self.others = Csr(others)
        self.lemma_rejects = Csr([sorted(rejects.get(i, ())) for i in range(len(lemma_id))])
        self.has_negatives = bool(rejects)
        self.n_ids = max((c.concept_id for c in vocab.concepts), default=0) + 1

    def match(self, captions: Captions) -> MatchResult:
        # every caption word whose lemma is ours, in caption order
        rows, tokens = paper_tokens(captions)
        word = numpy_ints(pc.index_in(tokens, value_set=self.words), null=-1).astype(np.int64)
        known = word >= 0
        rows, word = rows[known], word[known]
        if len(rows) == 0:
            return empty_result()
        rows, lemmas = self.word_lemmas.expand(rows, word)  # still sorted by row
        single_rows, single_ids = self.single.expand(rows, lemmas)
        cand_rows, cand_syn = self.trigger.expand(rows, lemmas)
        ok = self._complete(rows, lemmas, cand_rows, cand_syn)
        rows_out, ids = unique_pairs(np.concatenate([single_rows, cand_rows[ok]]),
                                     np.concatenate([single_ids, self.synonym_owner[cand_syn[ok]]]), self.n_ids)
        if self.has_negatives and len(rows_out):
            rows_out, ids = drop_pairs(rows_out, ids, *self.lemma_rejects.expand(rows, lemmas), self.n_ids)
        return rows_out, ids.astype(np.int32), np.ones(len(rows_out), np.float32)

    def _complete(self, rows: np.ndarray, lemmas: np.ndarray, cand_rows: np.ndarray,
                  cand_syn: np.ndarray) -> np.ndarray:
        """For each candidate (row, synonym): do the synonym's other lemmas all occur in that row?"""
        check_cand, check_lemma = self.others.expand(np.arange(len(cand_rows)), cand_syn)
        start = np.searchsorted(rows, cand_rows[check_cand], "left")
        length = np.searchsorted(rows, cand_rows[check_cand], "right") - start
        found = lemmas[ranges(start, length)] == np.repeat(check_lemma, length)
        check_ok = np.zeros(len(check_cand), bool)
        check_ok[np.repeat(np.arange(len(check_cand)), length)[found]] = True
        return np.bincount(check_cand[~check_ok], minlength=len(cand_rows)) == 0
