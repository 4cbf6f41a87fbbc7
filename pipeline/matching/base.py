"""What every matcher shares: the result shape, ``match_one``, and vectorised set operations on (row, concept) pairs."""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import pyarrow as pa

from tailstudy.arrays import arrow_bools, arrow_ints, arrow_strings, numpy_bools, numpy_ints  # noqa: F401 (re-export)

Captions = Sequence[str | None] | pa.Array | pa.ChunkedArray
MatchResult = tuple[np.ndarray, np.ndarray, np.ndarray]  # (row index int64, concept_id int32, score float32)


class Matcher(Protocol):
    method: str

    @property
    def version(self) -> str:
        """Everything that can change this matcher's output (rule, normaliser, options); part of the stage key."""

    def match(self, captions: Captions) -> MatchResult:
        """-> (row, concept_id, score) arrays, one entry per (caption, matched concept), sorted by row then concept."""


class MatchOne:
    """``match_one(caption) -> sorted concept ids`` on top of ``match``."""

    def match(self, captions: Captions) -> MatchResult:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def match_one(self, caption: str | None) -> list[int]:
        return self.match([caption])[1].tolist()


def empty_result() -> MatchResult:
    return np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)


class Csr:
    """A list of integer lists, flat: ``expand(keys)`` gives, for each key, every value of its list."""

    def __init__(self, lists: Sequence[Sequence[int]]):
        lengths = np.asarray([len(x) for x in lists], np.int64)
        self.ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.values = np.asarray([v for x in lists for v in x], np.int64)

    def lengths(self, keys: np.ndarray) -> np.ndarray:
        return self.ptr[keys + 1] - self.ptr[keys]

    def expand(self, rows: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, keys) -> (row repeated per value, value), in input order."""
        counts = self.lengths(keys)
        return np.repeat(rows, counts), self.values[ranges(self.ptr[keys], counts)]


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + length)`` for every pair, without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return offsets + np.arange(total)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique of a 1-d array by sorting: numpy 2's default (hash-based) unique is ~100x slower on integers."""
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if len(values) else values


def unique_pairs(rows: np.ndarray, cols: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (row, col) pairs, sorted by row then col."""
    keys = sorted_unique(rows.astype(np.int64) * n_cols + cols)
    return keys // n_cols, keys % n_cols


def drop_pairs(rows: np.ndarray, cols: np.ndarray, drop_rows: np.ndarray, drop_cols: np.ndarray,
               n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The (row, col) pairs that are not among the drop pairs (order kept)."""
    if len(drop_rows) == 0 or len(rows) == 0:
        return rows, cols
    keep = ~sorted_isin(rows.astype(np.int64) * n_cols + cols, drop_rows.astype(np.int64) * n_cols + drop_cols)
    return rows[keep], cols[keep]


def sorted_isin(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """np.isin by binary search in the sorted members (np.isin runs numpy 2's hash-based unique, several times slower)."""
    members = np.sort(members)
    at = np.minimum(np.searchsorted(members, values), len(members) - 1)
    return members[at] == values if len(members) else np.zeros(len(values), bool)
