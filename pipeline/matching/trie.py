"""Find every occurrence of many word sequences in many token streams at once, with numpy, or in one compiled pass.

A word trie whose edges are sorted (node, word) keys. All start positions walk the trie together, one word per step,
so the work is a handful of vectorised passes over the tokens, whatever the number of patterns: the equivalent of an
Aho-Corasick pass over whole words, without a Python loop per caption.

``find_text`` takes the text itself (an Arrow string array and a byte table that says which bytes make words): where
the C extension ``tailstudy._core`` is built it splits, looks up and walks in one pass over the bytes; else
it runs the numpy path (``split_bytes`` + ``word_ids`` + ``find``), which stays the specification it is tested against.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tailstudy.arrays import arrow_strings, numpy_ints
from tailstudy.compiled import core
from tailstudy.text import split_bytes


class WordTrie:
    def __init__(self, patterns: Sequence[tuple[str, ...]], compiled: bool = True):
        """patterns: distinct, non-empty word tuples; a hit reports the pattern's index. compiled=False: find_text
        always takes the numpy path."""
        words = sorted({w for p in patterns for w in p})
        self._words, self.compiled, self._cores = words, compiled and core is not None, {}
        self.words = arrow_strings(words)
        self.n_words = len(words)
        word_id = {w: i for i, w in enumerate(words)}
        edges: dict[tuple[int, int], int] = {}
        terminal = [-1]
        for index, pattern in enumerate(patterns):
            node = 0
            for word in pattern:
                key = (node, word_id[word])
                if key not in edges:
                    edges[key] = len(terminal)
                    terminal.append(-1)
                node = edges[key]
            if terminal[node] != -1:
                raise ValueError(f"duplicate pattern {' '.join(pattern)!r}")
            terminal[node] = index
        self.terminal = np.asarray(terminal, np.int64)
        self.root_child = np.full(max(self.n_words, 1), -1, np.int64)
        inner = sorted((parent * self.n_words + word, child) for (parent, word), child in edges.items() if parent)
        for (parent, word), child in edges.items():
            if parent == 0:
                self.root_child[word] = child
        self.edge_keys = np.asarray([k for k, _ in inner] or [-1], np.int64)
        self.edge_child = np.asarray([c for _, c in inner] or [-1], np.int64)
        self.max_len = max((len(p) for p in patterns), default=0)
        self.follows = np.zeros(max(self.n_words, 1), bool)  # words that occur after the first place of a pattern
        for pattern in patterns:
            for word in pattern[1:]:
                self.follows[word_id[word]] = True

    def word_ids(self, tokens: pa.Array) -> np.ndarray:
        """Index of each token in the trie's words, -1 for words no pattern uses."""
        if len(tokens) == 0 or self.n_words == 0:
            return np.full(len(tokens), -1, np.int64)
        return numpy_ints(pc.index_in(tokens, value_set=self.words), null=-1).astype(np.int64)

    def find(self, rows: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows: caption row of each token (non-decreasing); ids: word ids -> (row, pattern index) of every hit."""
        start = np.flatnonzero(ids >= 0)
        node = self.root_child[ids[start]]
        keep = node >= 0
        start, node = start[keep], node[keep]
        hit_rows, hit_patterns = [], []
        for step in range(self.max_len):
            pattern = self.terminal[node]
            done = pattern >= 0
            hit_rows.append(rows[start[done]])
            hit_patterns.append(pattern[done])
            if step + 1 == self.max_len or len(start) == 0:
                break
            nxt = start + step + 1
            ok = nxt < len(ids)
            start, node, nxt = start[ok], node[ok], nxt[ok]
            nxt_id = ids[nxt]
            ok = (nxt_id >= 0) & (rows[nxt] == rows[start])
            ok[ok] = self.follows[nxt_id[ok]]
            start, node, nxt = start[ok], node[ok], nxt[ok]
            keys = node * self.n_words + ids[nxt]
            at = np.minimum(np.searchsorted(self.edge_keys, keys), len(self.edge_keys) - 1)
            ok = self.edge_keys[at] == keys
            start, node = start[ok], self.edge_child[at[ok]]
        if not hit_rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(hit_rows), np.concatenate(hit_patterns)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cores": {}}  # compiled cores are rebuilt where they are used

    def _core_for(self, lut: np.ndarray):
        key = lut.tobytes()
        if key not in self._cores:
            self._cores[key] = core.Core([w.encode() for w in self._words], self.root_child, self.terminal,
                                         self.edge_keys, self.edge_child, self.follows.astype(np.uint8), key,
                                         self.max_len)
        return self._cores[key]

    def find_text(self, text: pa.Array, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (row, pattern index) hit in a string array without nulls whose words are the runs of bytes `lut`
        does not map to a space (as ``split_bytes`` splits it). The pairs of ``find``, maybe in another order."""
        if len(text) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if not self.compiled:
            rows, tokens = split_bytes(text, lut)
            return self.find(rows, self.word_ids(tokens))
        _validity, offsets, data = text.buffers()
        rows, patterns = self._core_for(lut).find(offsets, data if data is not None else b"", text.offset, len(text))
        return np.frombuffer(rows, np.int64), np.frombuffer(patterns, np.int64)
