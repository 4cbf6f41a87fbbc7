"""The vectorised path (tailstudy.text.normalised, and the phrase matcher on top of it) against the rule it implements,
on the inputs a vectorised rewrite gets wrong: every HTML5 entity name (with and without its semicolon, the
longest-prefix rule), numeric references and their special cases, possessives and apostrophes in every arrangement,
random Unicode text, sliced and chunked Arrow arrays; then whole matches against the direct per-class rule
(pipeline/matching/reference.py) on overlapping, nested and multi-word patterns with negatives. Every code point is
covered by tests/test_match_speed.py."""
from __future__ import annotations

from html.entities import html5

import numpy as np
import pyarrow as pa
import pytest

from tailstudy.matching.bag import BagMatcher
from tailstudy.matching.phrase import PhraseMatcher
from tailstudy.matching.reference import NaiveBag, NaivePhrase
from tailstudy.text import normalise, normalised
from tailstudy.vocab import Concept, Vocabulary


def assert_like_normalise(captions: list[str | None]) -> None:
    got = normalised(captions).to_pylist()
    for caption, found in zip(captions, got, strict=True):
        assert found == normalise(caption), repr(caption)


def test_every_html5_name_with_and_without_its_semicolon():
    tails = ["", "x", ";", " s", "'s", "é", "1", "_y"]
    names = sorted(html5)
    captions = [f"a&{name}{tails[i % len(tails)]}b" for i, name in enumerate(names)]
    captions += [f"&{name.rstrip(';')}{tail}" for name in names[::3] for tail in ("zz;", "Ω;", "")]
    # the longest-prefix rule (html.unescape reads "&notinx" as "¬inx"), empty and unterminated references
    captions += ["&ampere;", "&amp;amp;", "&ltx", "&notin;x", "&notinx", "&copysign", "&" + "a" * 40 + ";",
                 "&amp" + "é" * 3, "&&amp;", "& amp;", "&;", "&#;", "&#x;", "&#xg;", "&#", "&", "a&b&c",
                 "&nbsp;dog&apos;s", "x&NotEqualTilde;y", "&AMP;&Amp;&amp"]
    assert_like_normalise(captions)


@pytest.mark.parametrize("base", ["{}", "x{:x}", "X{:X}"])
def test_numeric_references(base):
    # C1 controls html.unescape maps to cp1252, surrogates and non-characters, past the last code point, huge numbers
    numbers = [0, 1, 9, 10, 13, 32, 39, 65, 127, 128, 133, 150, 159, 160, 233, 0x2019, 0xD7FF, 0xD800, 0xDFFF, 0xE000,
               0xFDD0, 0xFFFE, 0xFFFF, 0xFFFD, 0x1F600, 0x1FFFE, 0x2FFFF, 0x30000, 0x10FFFF, 0x110000, 10 ** 30]
    numbers += list(range(0x80, 0xA0)) + list(range(0xFB00, 0xFB07))
    captions = [f"a&#{base.format(n)}{tail}b" for n in numbers for tail in (";", "", " ", "s")]
    captions += [f"&#{'0' * 20}65;", "&#00000039;s", f"&#{'9' * 400};x"]
    assert_like_normalise(captions)


def test_possessives_and_apostrophes_in_every_arrangement():
    """ASCII rows with apostrophes take Arrow's regular expressions, the others Python's: both must agree with
    normalise, whatever the apostrophe, the letter case and what follows the s."""
    rng = np.random.default_rng(0)
    pieces = ["a", "s", "S", "'", "\u2019", "_", " ", "1", "\u00e9", "&apos;", "&#39;", "\uff53", "\uff07", "-", "x"]
    captions = ["".join(rng.choice(pieces, size=int(rng.integers(1, 12)))) for _ in range(8000)]
    assert_like_normalise(captions)


def test_random_unicode_text():
    rng = np.random.default_rng(1)
    alphabet = [chr(c) for c in rng.integers(0x80, 0x30000, 3000) if not 0xD800 <= c < 0xE000]
    alphabet += list("abcXYZ09 '&;#-_\t\n")
    alphabet += ["&amp;", "&lt;", "&#233;", "&#x2019;", "&eacute", "&frac12;", "\U00030001", "\U000E0067", "e\u0301"]
    captions = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 30)))) for _ in range(8000)]
    assert_like_normalise(captions + [None, ""])


def test_sliced_and_chunked_arrays_keep_their_rows():
    captions = ["plain fox", "\U00030000fox's \u00e9", None, "caf\u00e9", "x&amp;y", "Don't", "last  ", ""]
    arr = pa.array(captions)
    for start, length in ((0, 8), (1, 4), (3, 5), (5, 1), (2, 0)):
        assert normalised(arr.slice(start, length)).to_pylist() == [normalise(c) for c in captions[start:][:length]]
    chunked = pa.chunked_array([arr.slice(0, 3), arr.slice(3)])
    assert normalised(chunked).to_pylist() == [normalise(c) for c in captions]
    assert normalised([]).to_pylist() == [] and normalised([None]).to_pylist() == [""]


LONG = "x" * 70 + "yz"
# nested, overlapping and repeated multi-word patterns, single letters, digits, a long word, punctuation in phrases
PATTERNS = ["red", "fox", "red fox", "fox red", "red fox red", "a", "a b", "a b c", "b c", "b c d", "c", "abc", "2024",
            LONG, "x" * 70, "the cat", "cat dog fox", "mouse", "s", "zebra zebra", "t-shirt", "potter's wheel",
            "crème brûlée", "fish & chips"]
WORDS = PATTERNS + ["Red", "FOX", "mice", "foxes", "d", "dog", "T-Shirts", "Potter’s Wheel", "creme brulee"]
SEPARATORS = [" ", "  ", ", ", "-", "!", " | ", "\t", "'", "'s ", ".", "&amp;", " — ", "é", "🐟", "日本", "&",
              "_", "\u2019s ", "&#39;s "]


def generated(n: int, seed: int) -> list[str | None]:
    rng = np.random.default_rng(seed)
    out: list[str | None] = [None, "", " ", "fox", " fox ", "-red fox-", LONG, LONG + "s", "a b c", "abc abc"]
    for _ in range(n):
        k = int(rng.integers(0, 30 if rng.random() < 0.97 else 600))  # a few long captions
        parts = [WORDS[i] + SEPARATORS[j] for i, j in zip(rng.integers(len(WORDS), size=k),
                                                          rng.integers(len(SEPARATORS), size=k))]
        text = ("" if rng.random() < 0.5 else SEPARATORS[int(rng.integers(len(SEPARATORS)))]) + "".join(parts)
        out.append(None if rng.random() < 0.03 else text.rstrip() if rng.random() < 0.5 else text)
    return out


@pytest.fixture(scope="module")
def pattern_vocab():
    negatives = {0: ("dog",), 5: (LONG,), 10: ("cat dog",), 18: ("zebra",)}  # some concepts have negative words
    return Vocabulary("patterns", tuple(Concept(i, f"k{i}", p, (p,), negatives=negatives.get(i, ()))
                                        for i, p in enumerate(PATTERNS)))


@pytest.mark.parametrize("matcher, naive", [(PhraseMatcher, NaivePhrase), (BagMatcher, NaiveBag)])
def test_matches_equal_the_direct_rule_on_overlapping_patterns(pattern_vocab, matcher, naive):
    captions = generated(600, seed=3)
    fast, reference = matcher(pattern_vocab), naive(pattern_vocab)
    expected = [reference.match_one(c) for c in captions]
    assert sum(map(len, expected)) > 2000
    for part in (pa.array(captions), pa.chunked_array([captions[:250], captions[250:]])):
        rows, ids, _ = fast.match(part)
        got = [[] for _ in captions]
        for r, i in zip(rows.tolist(), ids.tolist()):
            got[r].append(i)
        assert got == expected
    start, length = 37, 200  # an Arrow slice: offsets that do not start at 0
    rows, ids, _ = fast.match(pa.array(captions).slice(start, length))
    got = [[] for _ in range(length)]
    for r, i in zip(rows.tolist(), ids.tolist()):
        got[r].append(i)
    assert got == expected[start:start + length]
