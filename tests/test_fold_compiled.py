"""The compiled folder (pipeline/_core.c: Folder) against normalise, the rule it implements: HTML references as
html.unescape reads them (every HTML5 name, the longest-prefix rule, numeric special cases), NFKD folding, the
possessive and apostrophe rules, and the rows it hands back to Python (code points past its table, invalid UTF-8).
Every code point is covered by tests/test_match_speed.py."""
from __future__ import annotations

import html
from html.entities import html5

import numpy as np
import pyarrow as pa
import pytest

from tailstudy import text
from tailstudy.compiled import core
from tailstudy.text import PHRASE_LUT, normalise, phrase_text, split_bytes

pytestmark = pytest.mark.skipif(core is None, reason="the C extension is not built (no C compiler)")


def words(captions, compiled: bool = True) -> list[list[str]]:
    rows, tokens = split_bytes(phrase_text(captions, compiled), PHRASE_LUT)
    out: list[list[str]] = [[] for _ in range(len(captions))]
    for row, token in zip(rows.tolist(), tokens.to_pylist()):
        if token:
            out[row].append(token)
    return out


def assert_like_normalise(captions: list[str | None]) -> None:
    got = words(captions)
    for caption, found in zip(captions, got):
        assert found == normalise(caption).split(), repr(caption)


def test_every_html5_name_with_and_without_its_semicolon():
    tails = ["", "x", ";", " s", "'s", "é", "1", "_y"]
    names = sorted(html5)
    captions = [f"a&{name}{tails[i % len(tails)]}b" for i, name in enumerate(names)]
    captions += [f"&{name.rstrip(';')}{tail}" for name in names[::3] for tail in ("zz;", "Ω;", "")]
    assert_like_normalise(captions)
    # the cases that exercise the longest-prefix rule and the 32-character group
    assert_like_normalise(["&ampere;", "&amp;amp;", "&ltx", "&notin;x", "&notinx", "&copysign", "&" + "a" * 40 + ";",
                           "&amp" + "é" * 3, "&&amp;", "& amp;", "&;", "&#;", "&#x;", "&#xg;", "&#", "&", "a&b&c",
                           "&nbsp;dog&apos;s", "x&NotEqualTilde;y", "&AMP;&Amp;&amp"])


@pytest.mark.parametrize("base", ["{}", "x{:x}", "X{:X}"])
def test_numeric_references(base):
    numbers = [0, 1, 9, 10, 13, 32, 39, 65, 127, 128, 133, 150, 159, 160, 233, 0x2019, 0xD7FF, 0xD800, 0xDFFF, 0xE000,
               0xFDD0, 0xFFFE, 0xFFFF, 0xFFFD, 0x1F600, 0x1FFFE, 0x2FFFF, 0x30000, 0x10FFFF, 0x110000, 10 ** 30]
    numbers += list(range(0x80, 0xA0)) + list(range(0xFB00, 0xFB07))
    captions = [f"a&#{base.format(n)}{tail}b" for n in numbers for tail in (";", "", " ", "s")]
    captions += [f"&#{'0' * 20}65;", "&#00000039;s", f"&#{'9' * 400};x"]
    assert_like_normalise(captions)


def test_possessives_and_apostrophes_in_every_arrangement():
    rng = np.random.default_rng(0)
    pieces = ["a", "s", "S", "'", "\u2019", "_", " ", "1", "\u00e9", "&apos;", "&#39;", "\uff53", "\uff07", "-", "x"]
    captions = ["".join(rng.choice(pieces, size=int(rng.integers(1, 12)))) for _ in range(20_000)]
    assert_like_normalise(captions)


def test_random_text_against_normalise_and_the_arrow_path():
    rng = np.random.default_rng(1)
    alphabet = [chr(c) for c in rng.integers(0x80, 0x30000, 3000) if not 0xD800 <= c < 0xE000]
    alphabet += list("abcXYZ09 '&;#-_\t")
    alphabet += ["&amp;", "&lt;", "&#233;", "&#x2019;", "&eacute", "&frac12;", "\U00030001", "\U000E0067"]
    captions = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 30)))) for _ in range(20_000)]
    captions += [None, ""]
    assert_like_normalise(captions)
    assert words(captions) == words(captions, compiled=False)


def test_rows_past_the_table_take_normalise_and_slices_keep_their_rows():
    captions = ["plain fox", "\U00030000fox's \u00e9", None, "caf\u00e9", "\U000E0041 x&amp;y", "last"]
    arr = pa.array(captions)
    assert_like_normalise(captions)
    assert words(arr.slice(1, 4)) == [normalise(c).split() for c in captions[1:5]]
    offsets, folded, fallback = text.compiled_folder().fold(*arr.buffers()[1:], 0, len(arr))
    assert np.frombuffer(fallback, np.int64).tolist() == [1, 4]  # beyond the table: Python's normalise decides


def test_invalid_utf8_is_never_folded_in_silence():
    bad = pa.Array.from_buffers(pa.string(), 2, [None, pa.py_buffer(np.array([0, 3, 6], np.int32)),
                                                 pa.py_buffer(b"ab\xffcaf")])
    _offsets, _folded, fallback = text.compiled_folder().fold(*bad.buffers()[1:], 0, 2)
    assert np.frombuffer(fallback, np.int64).tolist() == [0]


def test_the_tables_follow_this_pythons_html_module():
    """The entity tables are built from html / html.entities at run time: a caption using a name html5 added is still
    decoded as html.unescape decodes it."""
    sample = ["&" + name for name in sorted(html5)[::11]]
    assert [normalise(s) for s in sample] == [normalise(html.unescape(s)) for s in sample]
    assert_like_normalise(sample)


def test_the_folder_refuses_bad_tables():
    with pytest.raises(ValueError, match="differ in length"):
        core.Folder([0xE9], [], [], [], [], [], [])
    with pytest.raises(ValueError, match="code points"):
        core.Folder([0x30000], [b"x"], [], [], [], [], [])
    with pytest.raises(ValueError, match="sorted"):
        core.Folder([], [], [], [], [5, 1], [b"", b""], [])
    with pytest.raises(RuntimeError, match="not initialised"):
        core.Folder.__new__(core.Folder).fold(b"\0" * 8, b"a", 0, 1)
    folder = core.Folder([0xE9], [b"e"], [b"amp;"], [b" "], [], [], [])
    with pytest.raises(RuntimeError, match="already initialised"):
        folder.__init__([], [], [], [], [], [], [])
    offsets, folded, fallback = folder.fold(np.array([0, 13], np.int32).tobytes(), "Caf\u00e9&amp;x's".encode(), 0, 1)
    assert folded == b"cafe x" and fallback == b""
