"""The fast paths of the phrase tokeniser give normalise()'s words exactly, on every Unicode code point."""
from __future__ import annotations

import unicodedata

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tailstudy import text
from tailstudy.text import normalise, phrase_tokens

CODE_POINTS = [c for c in range(0x80, 0x110000) if not 0xD800 <= c < 0xE000]


def test_the_code_points_arrow_decomposes_differently_are_listed():
    """Arrow's NFKD (utf8proc) and Python's unicodedata disagree only on code points Python's database leaves
    unassigned; text.py routes rows holding one of them to the Python path."""
    if not text._ARROW_NFKD_AGREES:
        pytest.skip("another Unicode database: every non-ASCII row takes the Python path")
    arrow = pc.utf8_normalize(pa.array([chr(c) for c in CODE_POINTS]), form="NFKD").to_pylist()
    differ = [c for c, a in zip(CODE_POINTS, arrow) if unicodedata.normalize("NFKD", chr(c)) != a]
    listed = [c for lo, hi in text._ARROW_ONLY_DECOMPOSED for c in range(lo, hi + 1)]
    assert differ == listed
    assert all(unicodedata.category(chr(c)) == "Cn" for c in differ)


def test_phrase_tokens_equal_normalise_on_every_code_point():
    captions = [f"a{''.join(chr(c) for c in CODE_POINTS[i:i + 5])}b x's y\u2019s &amp;z {chr(CODE_POINTS[i])}&#39;s"
                for i in range(0, len(CODE_POINTS), 5)]
    captions += [f"Red{chr(c)}Fox \u2019 {chr(c)}\u00e9 &nbsp;" for c in CODE_POINTS[::7]]
    captions += [None, "", "'", "\u2019s", "&", "&amp", "\uff21\uff42\uff43 \ufb01sh", "e\u0301", "O'Brien's cat"]
    for start in range(0, len(captions), 50_000):
        part = captions[start:start + 50_000]
        rows, tokens = phrase_tokens(part)
        got = [[] for _ in part]
        for r, t in zip(rows.tolist(), tokens.to_pylist()):
            if t:
                got[r].append(t)
        assert got == [normalise(c).split() for c in part]


def test_match_and_count_never_import_pandas(tmp_path):
    """pyarrow imports pandas (about 0.3 CPU-s per process) on the first conversion of a Python value; the match path
    (planning, vocabulary, two forked workers, frequency, figure, catalog) and `tailstudy count` avoid every such
    conversion (tailstudy.arrays). Checked in fresh processes, where nothing imported pandas before. (Building the
    token index, --index, may import it: it costs seconds anyway.)"""
    import subprocess
    import sys

    path = tmp_path / "c.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"caption": ["a red fox &amp; a goldfish", "café crème", "dog's bowl"] * 400}), path)
    code = f"""
import sys
from tailstudy.flows.cli import main
sys.argv = ["tailstudy", *{{!r}}]
try:
    main()
except SystemExit as done:
    assert not done.code, done.code
assert {{!r}} or "pandas" not in sys.modules, "pandas imported"
"""
    ws = str(tmp_path / "ws")
    for argv, may in ((["match", str(path), "--vocab", "imagenet1k", "-j", "2", "-w", ws], False),
                      (["match", str(path), "--vocab", "imagenet1k", "--index", "-j", "1", "-w", ws], True),
                      (["count", "red fox", "-w", ws], False)):
        run = subprocess.run([sys.executable, "-c", code.format(argv, may)], capture_output=True, text=True)
        assert run.returncode == 0, (argv, run.stderr[-2000:])
