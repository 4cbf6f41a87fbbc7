"""Caption -> concept matchers behind one interface, chosen by name from a registry."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np
import pyarrow as pa

from pipeline.matching.phrase import PhraseMatcher
from pipeline.vocab import Vocabulary


class Matcher(Protocol):
    method: str
    version: str

    def match(self, captions: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (row index, concept_id, score) arrays, one entry per (caption, matched concept)."""


MATCHERS: dict[str, Callable[[Vocabulary], Matcher]] = {"phrase": PhraseMatcher}


def make_matcher(method: str, vocab: Vocabulary) -> Matcher:
    if method not in MATCHERS:
        raise ValueError(f"unknown matching method {method!r} (known: {', '.join(MATCHERS)})")
    return MATCHERS[method](vocab)


def matches_table(sample_ids: Sequence[str], captions: Sequence[str | None], matcher: Matcher) -> pa.Table:
    rows, concept_ids, scores = matcher.match(captions)
    ids = np.asarray(sample_ids, dtype=object)
    return pa.table(
        {
            "sample_id": pa.array(ids[rows] if len(rows) else [], pa.string()),
            "concept_id": pa.array(concept_ids, pa.int32()),
            "method": pa.array([matcher.method] * len(rows), pa.string()),
            "score": pa.array(scores, pa.float32()),
        }
    )
