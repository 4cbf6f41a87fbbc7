"""The vectorised phrase tokeniser gives normalise()'s words exactly, on every Unicode code point; the match and count
paths stay free of pandas. (No timing is asserted here: speed is benchmarks/bench_match.py's business.)"""
from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from tailstudy.text import normalise, phrase_tokens

CODE_POINTS = [c for c in range(0x80, 0x110000) if not 0xD800 <= c < 0xE000]


def test_phrase_tokens_equal_normalise_on_every_code_point():
    """Every code point inside words, between words, beside an apostrophe and an entity: the Python steps of the
    vectorised path (html, unicodedata) and its Arrow steps (RE2's code point classes) give normalise's words."""
    captions = [f"a{''.join(chr(c) for c in CODE_POINTS[i:i + 5])}b x's y\u2019s &amp;z {chr(CODE_POINTS[i])}&#39;s"
                for i in range(0, len(CODE_POINTS), 5)]
    captions += [f"Red{chr(c)}Fox \u2019 {chr(c)}\u00e9 &nbsp;" for c in CODE_POINTS[::7]]
    captions += [None, "", "'", "\u2019s", "&", "&amp", "\uff21\uff42\uff43 \ufb01sh", "e\u0301", "O'Brien's cat"]
    for start in range(0, len(captions), 50_000):
        part = captions[start:start + 50_000]
        rows, tokens = phrase_tokens(part)
        got = [[] for _ in part]
        for r, t in zip(rows.tolist(), tokens.to_pylist()):
            got[r].append(t)
        assert got == [normalise(c).split() for c in part]


def test_match_and_count_never_import_pandas(tmp_path):
    """pyarrow imports pandas (about 0.3 CPU-s per process) on the first conversion of a Python value; the match path
    (planning, vocabulary, two forked workers, frequency, figure, catalog) and `tailstudy count` avoid every such
    conversion (tailstudy.arrays). Checked in fresh processes, where nothing imported pandas before. Building the
    token index (--index) may import it (it costs seconds anyway): that run only prepares the index `count` reads."""
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"caption": ["a red fox &amp; a goldfish", "café crème", "dog's bowl"] * 400}), path)
    code = """
import sys
from tailstudy.flows.cli import main
sys.argv = ["tailstudy", *{!r}]
try:
    main()
except SystemExit as done:
    assert not done.code, done.code
"""
    no_pandas = 'assert "pandas" not in sys.modules, "pandas imported"\n'
    ws = str(tmp_path / "ws")
    (tmp_path / "ws").mkdir()
    for argv, checked in ((["match", str(path), "--vocab", "imagenet1k", "-j", "2", "-w", ws], True),
                          (["match", str(path), "--vocab", "imagenet1k", "--index", "-j", "1", "-w", ws], False),
                          (["count", "red fox", "-w", ws], True)):
        script = code.format(argv) + (no_pandas if checked else "")
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert run.returncode == 0, (argv, run.stderr[-2000:])
