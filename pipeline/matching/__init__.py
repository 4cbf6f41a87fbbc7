"""Caption -> concept matchers behind one interface, chosen by name from a registry."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from tailstudy.arrays import arrow_ints, arrow_repeat
from tailstudy.matching.base import Captions, Matcher
from tailstudy.matching.bag import BagMatcher
from tailstudy.matching.phrase import PhraseMatcher
from tailstudy.matching.semantic import SemanticMatcher
from tailstudy.vocab import Vocabulary

MATCHERS: dict[str, Callable[..., Matcher]] = {"phrase": PhraseMatcher, "bag": BagMatcher, "semantic": SemanticMatcher}


_BUILT: dict[tuple, Matcher] = {}  # the last few matchers built: planning, the parent and forked workers share one


def make_matcher(method: str, vocab: Vocabulary, **options: Any) -> Matcher:
    """The matcher of (method, vocabulary, options); built once per process (building reads WordNet's tables)."""
    if method not in MATCHERS:
        raise ValueError(f"unknown matching method {method!r} (known: {', '.join(MATCHERS)})")
    key = (method, vocab, tuple(sorted(options.items())))
    if key not in _BUILT:
        if len(_BUILT) >= 4:
            _BUILT.pop(next(iter(_BUILT)))
        _BUILT[key] = MATCHERS[method](vocab, **options)
    return _BUILT[key]


def matches_table(sample_ids: Sequence[str] | pa.Array, captions: Captions, matcher: Matcher) -> pa.Table:
    rows, concept_ids, scores = matcher.match(captions)
    ids = sample_ids if isinstance(sample_ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(sample_ids), pa.string())
    return pa.table({
        "sample_id": ids.take(arrow_ints(rows)).cast(pa.string()),
        "concept_id": arrow_ints(concept_ids, np.int32),
        "method": arrow_repeat(matcher.method, len(rows)),
        "score": arrow_ints(scores, np.float32),
    })
