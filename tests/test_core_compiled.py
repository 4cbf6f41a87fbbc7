"""The compiled core (pipeline/_core.c) against the numpy path it replaces: same hits, same byte flags, same matches,
on generated text full of the cases a byte scanner gets wrong (empty and null captions, separators at both ends,
overlapping and multi-word patterns, words longer than any buffer, non-ASCII rows, sliced arrays). And the extension
must be built wherever a C compiler is: a silent fall-back to the numpy path would pass every other test."""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tailstudy.compiled import core
from tailstudy.matching.bag import BagMatcher
from tailstudy.matching.phrase import PhraseMatcher
from tailstudy.matching.trie import WordTrie
from tailstudy.text import _BYTE_FLAGS, PHRASE_LUT, _row_flags, phrase_text, split_bytes
from tailstudy.vocab import Concept, Vocabulary, load_vocab

needs_core = pytest.mark.skipif(core is None, reason="the C extension is not built (no C compiler)")

LONG = "x" * 70 + "yz"  # longer than any fixed buffer a scanner might use
WORDS = ["red", "fox", "red fox", "fox red", "a", "b", "c", "ab", "abc", "the", "cat", "dog", "2024", LONG, "Red",
         "FOX", "x" * 70, "mouse", "mice", "zebra", "d"]
SEPARATORS = [" ", "  ", ", ", "-", "!", " | ", "\t", "'", "'s ", ".", "&amp;", " — ", "é", "🐟", "日本", "&", "_"]


def c_compiler() -> str | None:
    """The compiler setuptools would build the extension with ($CC, else the one Python was built with)."""
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(compiler)


def test_the_extension_is_built_where_a_c_compiler_is():
    """CI installs with a compiler: the matcher must run compiled there, not fall back without a word."""
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if c_compiler() is None or not headers.is_file():
        pytest.skip("no C compiler or no Python headers here: the numpy path is the expected one")
    assert core is not None, "a C compiler is here but tailstudy._core is not built: reinstall (pip install -e .)"
    assert PhraseMatcher(Vocabulary("t", (Concept(0, "k", "fox", ("fox",)),))).trie.compiled


def test_the_built_extension_is_the_current_source():
    """A changed pipeline/_core.c needs a reinstall (deploy/setup.sh does it): a stale build fails here."""
    source = Path(__file__).resolve().parent.parent / "pipeline" / "_core.c"
    if core is None or not source.is_file():
        pytest.skip("no extension built, or no checkout")
    assert core.source_sha256 == hashlib.sha256(source.read_bytes()).hexdigest(), \
        "tailstudy._core was built from another pipeline/_core.c: run bash deploy/setup.sh (or pip install -e .)"


def generated(n: int, seed: int) -> list[str | None]:
    rng = np.random.default_rng(seed)
    out: list[str | None] = [None, "", " ", "fox", " fox ", "-red fox-", LONG, LONG + "s", "a b c", "abc abc"]
    for _ in range(n):
        k = int(rng.integers(0, 40 if rng.random() < 0.95 else 2000))  # a few long captions
        parts = [WORDS[i] + SEPARATORS[j] for i, j in zip(rng.integers(len(WORDS), size=k),
                                                          rng.integers(len(SEPARATORS), size=k))]
        text = ("" if rng.random() < 0.5 else SEPARATORS[int(rng.integers(len(SEPARATORS)))]) + "".join(parts)
        out.append(None if rng.random() < 0.03 else text.rstrip() if rng.random() < 0.5 else text)
    return out


def pairs(rows: np.ndarray, patterns: np.ndarray) -> list[tuple[int, int]]:
    return sorted(zip(rows.tolist(), patterns.tolist()))


PATTERNS = [("red",), ("fox",), ("red", "fox"), ("fox", "red"), ("red", "fox", "red"), ("a",), ("a", "b"),
            ("a", "b", "c"), ("b", "c"), ("b", "c", "d"), ("c",), ("abc",), ("2024",), (LONG,), ("x" * 70,),
            ("the", "cat"), ("cat", "dog", "fox"), ("mice",), ("s",), ("zebra", "zebra")]


@needs_core
@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_find_gives_the_numpy_hits(seed):
    captions = generated(3000, seed)
    fast, slow = WordTrie(PATTERNS), WordTrie(PATTERNS, compiled=False)
    assert fast.compiled and not slow.compiled
    text = phrase_text(captions, compiled=False)
    folded = phrase_text(captions)  # the compiled folder: other bytes, the same words (tests/test_fold_compiled.py)
    assert split_bytes(folded, PHRASE_LUT)[1].equals(split_bytes(text, PHRASE_LUT)[1])
    assert pairs(*fast.find_text(folded, PHRASE_LUT)) == pairs(*slow.find_text(text, PHRASE_LUT))
    got, want = pairs(*fast.find_text(text, PHRASE_LUT)), pairs(*slow.find_text(text, PHRASE_LUT))
    assert got == want and len(want) > 1000
    for start, length in ((7, 100), (1234, 0), (len(text) - 5, 5)):  # slices: Arrow offsets not starting at 0
        part = text.slice(start, length)
        assert pairs(*fast.find_text(part, PHRASE_LUT)) == pairs(*slow.find_text(part, PHRASE_LUT))


@needs_core
def test_compiled_find_edge_cases():
    trie = WordTrie(PATTERNS)
    for text in (pa.array([], pa.string()), pa.array(["", "", ""]), pa.array(["!!!", "   "]), pa.array(["zzz q"])):
        rows, patterns = trie.find_text(text, PHRASE_LUT)
        assert len(rows) == len(patterns) == 0 and rows.dtype == np.int64
    rows, patterns = trie.find_text(pa.array(["RED fox red", "x", "c b a b c d"]), PHRASE_LUT)
    # every occurrence, overlapping ones and repeats included ("red" twice, "c" twice)
    named = [(0, ("red",)), (0, ("fox",)), (0, ("red",)), (0, ("red", "fox")), (0, ("fox", "red")),
             (0, ("red", "fox", "red")), (2, ("c",)), (2, ("a",)), (2, ("a", "b")), (2, ("a", "b", "c")),
             (2, ("b", "c")), (2, ("b", "c", "d")), (2, ("c",))]
    assert pairs(rows, patterns) == sorted((r, PATTERNS.index(p)) for r, p in named)
    assert pairs(*WordTrie([]).find_text(pa.array(["a b"]), PHRASE_LUT)) == []


@needs_core
def test_compiled_core_rejects_bad_buffers():
    trie = WordTrie(PATTERNS)
    text = pa.array(["red fox"])
    _validity, offsets, data = text.buffers()
    compiled = trie._core_for(PHRASE_LUT)
    with pytest.raises(ValueError):
        compiled.find(offsets, data, 0, 5)  # more rows than offsets
    with pytest.raises(ValueError):
        compiled.find(np.array([0, 100], np.int32).tobytes(), data, 0, 1)  # past the data
    with pytest.raises(ValueError):
        compiled.find(np.array([5, 2], np.int32).tobytes(), data, 0, 1)  # decreasing
    with pytest.raises(ValueError):
        core.row_flags(offsets, data, 0, 1, b"short table")
    one = np.zeros(1, np.int64)
    with pytest.raises(ValueError):  # a child beyond the nodes: refused when built, never read out of bounds
        core.Core([b"a"], one + 5, one - 1, one, one, b"\0", PHRASE_LUT.tobytes(), 1)


@needs_core
def test_compiled_row_flags_equal_numpy():
    rng = np.random.default_rng(3)
    captions = ["".join(chr(c) for c in rng.integers(32, 140, size=int(rng.integers(0, 30)))) for _ in range(3000)]
    captions += ["&", "'", "é", "plain", ""]
    arr = pa.array(captions)
    for part in (arr, arr.slice(13, 500)):
        fast, slow = _row_flags(part, _BYTE_FLAGS), _row_flags(part, _BYTE_FLAGS, compiled=False)
        assert all(np.array_equal(a, b) for a, b in zip(fast, slow)) and len(fast[0]) > 100


@needs_core
@pytest.mark.parametrize("matcher", [PhraseMatcher, BagMatcher])
def test_compiled_matcher_equals_numpy_matcher(matcher):
    """Whole matches (positives, plurals, negatives; the bag rule's lemmas) on the shipped vocabulary and on captions
    that name its classes."""
    vocab = load_vocab("imagenet1k")
    names = [s for c in vocab.concepts[:300] for s in c.synonyms]
    rng = np.random.default_rng(5)
    captions = generated(1000, 7) + [" ".join(rng.choice(names, size=3)) + SEPARATORS[i % len(SEPARATORS)] + "s car"
                                     for i in range(2000)]
    fast, slow = matcher(vocab), matcher(vocab, compiled=False)
    for part in (captions, pa.chunked_array([pa.array(captions[:1500]), pa.array(captions[1500:])])):
        got, want = fast.match(part), slow.match(part)
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(got, want)) and len(want[0]) > 2000


@needs_core
def test_a_pickled_trie_rebuilds_its_compiled_core():
    trie = WordTrie(PATTERNS)
    text = pa.array(["red fox", "a b c"])
    before = pairs(*trie.find_text(text, PHRASE_LUT))
    again = pickle.loads(pickle.dumps(trie))
    assert again.compiled and pairs(*again.find_text(text, PHRASE_LUT)) == before
