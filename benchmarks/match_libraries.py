"""The phrase rule on top of multi-pattern string libraries, for bench_match.py's side-by-side comparison.

Each caption is normalised by the same vectorised tokeniser as PhraseMatcher (tailstudy.text.phrase_tokens's byte
mapping), joined into one buffer " w1 w2 ... " per caption, and every pattern " form " (a synonym or negative form,
with its plurals, spaces around) is found by the library with overlapping matches; the hits then go through the same
positive / negative tables as PhraseMatcher, so the matches must be identical (the benchmark checks it).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tailstudy.matching.base import Captions, MatchResult, drop_pairs, empty_result, unique_pairs
from tailstudy.matching.phrase import PhraseMatcher
from tailstudy.text import PHRASE_LUT, as_string_array, phrase_tokens


def normalised_buffer(captions: Captions) -> tuple[bytes, np.ndarray]:
    """-> (b" w w \n w w \n...", start offset of each caption in it): captions' words joined by single spaces."""
    rows, tokens = phrase_tokens(captions)
    n = len(as_string_array(captions))
    offsets = np.searchsorted(rows, np.arange(n + 1)).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), tokens)
    text = pc.binary_join_element_wise(" ", pc.binary_join(lists, " "), " \n", "")  # " " + words + " \n"
    _v, offs, data = text.buffers()
    starts = np.frombuffer(offs, np.int32)[: n + 1].astype(np.int64)
    return memoryview(data)[starts[0]: starts[-1]].tobytes(), starts - starts[0]


class LibraryPhrase:
    """PhraseMatcher's rule with the pattern search done by `library` ("ahocorasick_rs" or "pyahocorasick")."""

    def __init__(self, reference: PhraseMatcher, library: str):
        self.ref = reference
        words = reference.trie.words.to_pylist()
        patterns = self._patterns(words)
        self.library = library
        if library == "ahocorasick_rs":
            import ahocorasick_rs

            self.automaton = ahocorasick_rs.BytesAhoCorasick([p.encode() for p in patterns])
        else:
            import ahocorasick

            self.automaton = ahocorasick.Automaton()
            for index, pattern in enumerate(patterns):
                self.automaton.add_word(pattern, index)
            self.automaton.make_automaton()

    def _patterns(self, words: list[str]) -> list[str]:
        """The trie's patterns, in pattern-index order, as " w1 w2 " strings."""
        trie, found = self.ref.trie, {}
        stack = [(int(child), (words[w],)) for w, child in enumerate(trie.root_child) if child >= 0]
        children: dict[int, list[tuple[int, int]]] = {}
        for key, child in zip(trie.edge_keys.tolist(), trie.edge_child.tolist()):
            if key >= 0:
                children.setdefault(key // trie.n_words, []).append((key % trie.n_words, child))
        while stack:
            node, path = stack.pop()
            if trie.terminal[node] >= 0:
                found[int(trie.terminal[node])] = " " + " ".join(path) + " "
            stack.extend((child, path + (words[w],)) for w, child in children.get(node, ()))
        return [found[i] for i in range(len(found))]

    def _hits(self, text: bytes) -> tuple[np.ndarray, np.ndarray]:
        """(pattern index, start byte) of every occurrence, overlapping ones included."""
        if self.library == "ahocorasick_rs":
            found = self.automaton.find_matches_as_indexes(text, overlapping=True)
            if not found:
                return np.zeros(0, np.int64), np.zeros(0, np.int64)
            hits = np.array(found, np.int64)
            return hits[:, 0], hits[:, 1]
        decoded = text.decode("ascii")
        found = [(index, end) for end, index in self.automaton.iter(decoded)]
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        hits = np.array(found, np.int64)
        return hits[:, 0], hits[:, 1]

    def match(self, captions: Captions) -> MatchResult:
        text, starts = normalised_buffer(captions)
        patterns, positions = self._hits(text)
        if len(patterns) == 0:
            return empty_result()
        hit_rows = np.searchsorted(starts, positions, "right") - 1
        ref = self.ref
        rows, ids = unique_pairs(*ref.positive.expand(hit_rows, patterns), ref.n_ids)
        if ref.has_negatives:
            rows, ids = drop_pairs(rows, ids, *ref.negative.expand(hit_rows, patterns), ref.n_ids)
        return rows, ids.astype(np.int32), np.ones(len(rows), np.float32)


_ = PHRASE_LUT  # the byte mapping both sides share (documented above)
