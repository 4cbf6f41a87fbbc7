"""The sharded match stage: inputs, parallel = serial byte for byte, resume after a kill, malformed inputs, the CLI."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tailstudy import catalog
from tailstudy.errors import InputError
from tailstudy.matching import make_matcher
from tailstudy.matching.inputs import plan_shards, read_batches, resolve_sources
from tailstudy.matching.sharded import MatcherSpec, part_path, run_shards, stats_path
from tailstudy.stages import match_captions
from tailstudy.store import Workspace
from tailstudy.vocab import imagenet1k

WORDS = ["goldfish", "tench", "T-shirts", "a", "the", "photo", "red", "fox", "crane", "bird", "sub", "menu", "café",
         "&amp;", "🐟", "school", "bus", "daisies", None]


def captions(n: int, seed: int = 0) -> list[str | None]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = [w for w in rng.choice(np.array(WORDS, object), size=int(rng.integers(0, 8))) if w]
        out.append(" ".join(words) if rng.random() > 0.03 else None)
    return out


@pytest.fixture(scope="module")
def inet():
    return imagenet1k()


@pytest.fixture
def parquet_file(tmp_path) -> Path:
    path = tmp_path / "caps.parquet"
    pq.write_table(pa.table({"sample_id": [f"s{i}" for i in range(3000)], "caption": captions(3000)}), path,
                   row_group_size=500)
    return path


def parts(work: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(work.glob("part-*.parquet"))}


def test_parallel_shards_are_byte_identical_to_serial(parquet_file, tmp_path, inet):
    shards = plan_shards(resolve_sources(parquet_file), shard_rows=1000)
    assert [(s.row_groups, s.first_row, s.rows) for s in shards] == [((0, 1), 0, 1000), ((2, 3), 1000, 1000),
                                                                    ((4, 5), 2000, 1000)]
    spec = MatcherSpec("phrase", inet)
    serial = run_shards(shards, spec, tmp_path / "one", workers=1)
    parallel = run_shards(shards, spec, tmp_path / "two", workers=2)
    assert serial == parallel and [s["captions"] for s in serial] == [1000, 1000, 1000]
    assert parts(tmp_path / "one") == parts(tmp_path / "two")
    table = pq.read_table(sorted((tmp_path / "one").glob("part-*.parquet")))
    rows, ids, _ = make_matcher("phrase", inet).match(pq.read_table(parquet_file).column("caption"))
    assert table.column("sample_id").to_pylist() == [f"s{r}" for r in rows]
    assert table.column("concept_id").to_pylist() == ids.tolist()


def test_resume_redoes_only_unfinished_shards(parquet_file, tmp_path, inet):
    shards = plan_shards(resolve_sources(parquet_file), shard_rows=500)
    spec = MatcherSpec("bag", inet)
    clean = tmp_path / "clean"
    run_shards(shards, spec, clean, workers=1)

    work = tmp_path / "work"
    calls: list[int] = []

    def dies_after_two(fn, jobs):
        out = []
        for job in jobs:
            if len(calls) == 2:
                raise KeyboardInterrupt  # the run is killed while the third shard is in flight
            calls.append(job[0].index)
            out.append(fn(job))
        return out

    with pytest.raises(KeyboardInterrupt):
        run_shards(shards, spec, work, mapper=dies_after_two)
    assert sorted(p.name for p in work.glob("part-*")) == ["part-00000.json", "part-00000.parquet",
                                                          "part-00001.json", "part-00001.parquet"]
    first = (work / "part-00000.parquet").stat().st_mtime_ns
    redone: list[int] = []
    stats = run_shards(shards, spec, work, mapper=lambda fn, jobs: [redone.append(j[0].index) or fn(j) for j in jobs])
    assert redone == [2, 3, 4, 5]
    assert (work / "part-00000.parquet").stat().st_mtime_ns == first
    assert parts(work) == parts(clean)  # no row written twice, nothing lost
    assert sum(s["captions"] for s in stats) == 3000


def test_a_shard_without_its_counts_file_is_redone(parquet_file, tmp_path, inet):
    shards = plan_shards(resolve_sources(parquet_file), shard_rows=1500)
    spec = MatcherSpec("phrase", inet)
    run_shards(shards, spec, tmp_path, workers=1)
    stats_path(tmp_path, 1).unlink()  # killed between writing the part and its counts
    part_path(tmp_path, 1).write_bytes(b"half-written")
    redone: list[int] = []
    run_shards(shards, spec, tmp_path, mapper=lambda fn, jobs: [redone.append(j[0].index) or fn(j) for j in jobs])
    assert redone == [1]
    assert pq.read_table(part_path(tmp_path, 1)).num_rows > 0


KILL_SCRIPT = """
import os, pickle, signal, sys
from tailstudy.matching.sharded import run_shards
shards, spec, work = pickle.load(open(sys.argv[1], "rb"))
seen = []
def progress(step, total):
    seen.append(step)
    if sum(seen) >= 1500:  # two of three shards done, the third in flight: die without any cleanup
        os.kill(os.getpid(), signal.SIGKILL)
run_shards(shards, spec, work, workers=1, progress=progress)
"""


def test_killed_stage_resumes(tmp_path, inet):
    """The match stage's shard loop is SIGKILLed in a child process; the stage then resumes from its work directory."""
    import pickle

    from tailstudy.matching.inputs import BATCH_ROWS
    from tailstudy.stages import plan_match

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        pq.write_table(pa.table({"caption": captions(700, seed=10 + i)}), folder / f"part{i}.parquet")
    assert BATCH_ROWS > 700  # one progress call per shard
    ws = Workspace(tmp_path / "ws")
    plan = plan_match(folder, "imagenet1k", "phrase").upstream["match"]
    work = ws.scratch_dir("match", plan.key)
    job = tmp_path / "job.pkl"
    job.write_bytes(pickle.dumps((plan_shards(plan.config["sources"]), MatcherSpec("phrase", plan.config["vocab"]),
                                  work)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(job)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]
    assert sorted(p.name for p in work.glob("part-*.json")) == ["part-00000.json", "part-00001.json"]
    assert not [p for p in (ws.root / "match").iterdir() if not p.name.startswith(".")]  # no artifact yet
    before = {p.name: p.stat().st_mtime_ns for p in work.glob("part-*.parquet")}
    result = match_captions(ws, folder, "imagenet1k", "phrase", workers=1)["match"]
    assert result.status == "ran" and result.key == plan.key and not work.exists()
    for name, mtime in before.items():  # finished shards were moved into the artifact, not redone
        assert (result.path / "matches" / name).stat().st_mtime_ns == mtime
    fresh = match_captions(Workspace(tmp_path / "fresh"), folder, "imagenet1k", "phrase", workers=1)["match"]
    assert fresh.key == result.key
    assert parts(fresh.path / "matches") == parts(result.path / "matches")  # no duplicate, no missing row


# ---------------------------------------------------------------- inputs: formats, ids, the stage, the catalog

def test_folder_of_mixed_shards(tmp_path, inet):
    folder = tmp_path / "shards"
    folder.mkdir()
    pq.write_table(pa.table({"TEXT": ["goldfish", "a tench"], "sample_id": [7, 8]}), folder / "a.parquet")
    (folder / "b.csv").write_text('caption,other\n"T-shirt, red",1\nnothing,2\n', encoding="utf-8")
    with gzip.open(folder / "c.tsv.gz", "wt", encoding="utf-8") as fh:
        fh.write("caption\tx\ngoldfish and tench\t1\n")
    (folder / "d.jsonl").write_text(json.dumps({"caption": "crème brûlée"}) + "\n" + json.dumps({"x": 1}) + "\n"
                                    + json.dumps({"caption": "daisies"}) + "\n", encoding="utf-8")
    sources = resolve_sources(folder)
    assert [(s.name, s.format, s.caption_col, s.id_col) for s in sources] == [
        ("a.parquet", "parquet", "TEXT", "sample_id"), ("b.csv", "csv", "caption", None),
        ("c.tsv.gz", "tsv", "caption", None), ("d.jsonl", "jsonl", "caption", None)]
    read = [(ids.to_pylist(), caps.to_pylist()) for shard in plan_shards(sources) for ids, caps in read_batches(shard)]
    assert read == [(["7", "8"], ["goldfish", "a tench"]), (["b.csv:0", "b.csv:1"], ["T-shirt, red", "nothing"]),
                    (["c.tsv.gz:0"], ["goldfish and tench"]), (["d.jsonl:0", "d.jsonl:1", "d.jsonl:2"],
                                                              ["crème brûlée", None, "daisies"])]
    ws = Workspace(tmp_path / "ws")
    results = match_captions(ws, folder, "imagenet1k", "phrase", workers=2)
    assert {k: r.status for k, r in results.items()} == {"vocab": "ran", "match": "ran", "frequency": "ran"}
    matches = pq.read_table(results["match"].path / "matches").to_pylist()
    assert [(m["sample_id"], m["concept_id"]) for m in matches] == [
        ("7", 1), ("8", 0), ("b.csv:0", 610), ("c.tsv.gz:0", 0), ("c.tsv.gz:0", 1), ("d.jsonl:2", 985)]
    assert (results["frequency"].path / "rank_frequency.png").stat().st_size > 1000
    catalog.refresh(ws)
    top = catalog.query(ws, "select name, count from concept_freq where count > 0 order by count desc, name")
    assert top.values.tolist() == [["goldfish", 2], ["tench", 2], ["T-shirt", 1], ["daisy", 1]]
    coverage = catalog.query(ws, "select captions, no_concept, one_concept, several_concepts from imbalance")
    assert coverage.values.tolist() == [[8, 3, 4, 1]]
    again = match_captions(ws, folder, "imagenet1k", "phrase")
    assert {k: r.status for k, r in again.items()} == {"vocab": "reused", "match": "reused", "frequency": "reused"}
    assert match_captions(ws, folder, "imagenet1k", "bag")["match"].key != results["match"].key


def test_ids_from_a_given_column_and_row_numbers(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("id,caption\nx1,goldfish\nx2,tench\n", encoding="utf-8")
    shard = plan_shards(resolve_sources(path, id_col="id"))[0]
    assert [ids.to_pylist() for ids, _ in read_batches(shard)] == [["x1", "x2"]]
    shard = plan_shards(resolve_sources(path))[0]
    assert [ids.to_pylist() for ids, _ in read_batches(shard)] == [["0", "1"]]


# ---------------------------------------------------------------- malformed inputs: one line, file + column

def _bad_utf8_parquet(path: Path) -> None:
    offsets = pa.py_buffer(np.array([0, 2, 7], np.int32).tobytes())
    bad = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"okcaf\xe9!")])
    pq.write_table(pa.table({"caption": bad}), path)


MALFORMED = {
    "missing caption column (Parquet)": ("a.parquet", lambda p: pq.write_table(pa.table({"txt": ["x"]}), p),
                                         {}, ["a.parquet", "caption", "txt"]),
    "missing caption column (CSV)": ("a.csv", lambda p: p.write_text("title,url\nx,y\n"), {"caption_col": "TEXT"},
                                     ["a.csv", "'TEXT'", "title, url"]),
    "missing id column": ("a.csv", lambda p: p.write_text("caption\nx\n"), {"id_col": "uid"}, ["a.csv", "'uid'"]),
    "non-UTF-8 CSV": ("a.csv", lambda p: p.write_bytes(b"caption\nhello\ncaf\xe9\n"), {},
                      ["a.csv", "'caption'", "UTF-8", "line 3"]),
    "non-UTF-8 JSON lines": ("a.jsonl", lambda p: p.write_bytes(b'{"caption": "ok"}\n{"caption": "caf\xe9"}\n'), {},
                             ["a.jsonl", "'caption'", "UTF-8", "line 2"]),
    "non-UTF-8 Parquet binary": ("a.parquet", lambda p: pq.write_table(pa.table({"caption": pa.array(
        [b"ok", b"caf\xe9"], pa.binary())}), p), {}, ["a.parquet", "'caption'", "UTF-8", "row 1"]),
    "non-UTF-8 Parquet string": ("a.parquet", _bad_utf8_parquet, {}, ["a.parquet", "'caption'", "UTF-8", "row 1"]),
    "corrupt Parquet": ("a.parquet", lambda p: p.write_bytes(b"PAR1" + os.urandom(200)), {},
                        ["a.parquet", "Parquet"]),
    "numbers, not text": ("a.parquet", lambda p: pq.write_table(pa.table({"caption": [1, 2]}), p), {},
                          ["a.parquet", "'caption'", "int64"]),
    "unsupported file": ("a.xlsx", lambda p: p.write_text("x"), {}, ["a.xlsx", "unsupported"]),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input(tmp_path, case):
    name, write, kwargs, needles = MALFORMED[case]
    path = tmp_path / "in" / name
    path.parent.mkdir()
    write(path)
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError) as info:
        match_captions(ws, path, "imagenet1k", "phrase", workers=1, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for needle in needles:
        assert needle in message, message
    match_dir = ws.root / "match"
    assert not match_dir.exists() or not list(match_dir.iterdir())  # no artifact, no work files
    assert not (ws.root / "frequency").exists()


def test_corrupt_row_group_found_while_matching(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"caption": captions(2000)}), path, row_group_size=1000, compression="none")
    data = bytearray(path.read_bytes())
    data[200:600] = os.urandom(400)  # inside the first row group's pages; the footer stays readable
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"a\.parquet: column 'caption'"):
        match_captions(Workspace(tmp_path / "ws"), path, "imagenet1k", "bag", workers=1)
    assert not list((tmp_path / "ws" / "match").iterdir())


def test_empty_and_missing_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no caption files"):
        resolve_sources(tmp_path / "empty")
    with pytest.raises(InputError, match="no such file"):
        resolve_sources(tmp_path / "nope.parquet")


# ---------------------------------------------------------------- the command line (in process, through main())

def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from tailstudy.flows import cli

    monkeypatch.setattr(sys, "argv", ["tailstudy", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_cli_match_then_sql(tmp_path, monkeypatch, capsys):
    src = tmp_path / "web.csv"
    src.write_text("TEXT,url\nTwo goldfishes,u1\nT-SHIRTS &amp; more,u2\nnothing here,u3\n", encoding="utf-8")
    ws = str(tmp_path / "ws")
    (tmp_path / "ws").mkdir()
    code, out, err = run_cli(monkeypatch, capsys, "match", str(src), "--vocab", "imagenet1k", "-w", ws)
    assert code in (0, None), err
    assert "3 captions: 2 with a concept" in " ".join(out.split())
    code, out, _ = run_cli(monkeypatch, capsys, "sql", "select name, count from concept_freq where count > 0 "
                                                      "order by name", "-w", ws, "--format", "csv")
    assert out.splitlines() == ["name,count", "T-shirt,1", "goldfish,1"]
    code, out, _ = run_cli(monkeypatch, capsys, "sql", "@caption_coverage", "-w", ws, "--format", "json")
    assert json.loads(out)[0]["several_concepts"] == 0


def test_the_installed_command_flushes_its_output_and_keeps_exit_codes(tmp_path):
    """`tailstudy` (the console script: tailstudy.flows.console:main) as a user runs it: what it printed arrives in full
    through a pipe, with its exit code, and the catalog is usable."""
    from conftest import VENV_BIN

    src = tmp_path / "web.csv"
    src.write_text("TEXT\nTwo goldfishes\nT-SHIRTS &amp; more\nnothing here\n", encoding="utf-8")
    ws = tmp_path / "ws"
    ws.mkdir()
    done = subprocess.run([VENV_BIN / "tailstudy", "match", src, "--vocab", "imagenet1k", "-w", ws],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3 captions: 2 with a concept" in " ".join(done.stdout.split())
    assert done.stdout.rstrip().endswith("@corpus_vs_reference")
    query = subprocess.run([VENV_BIN / "tailstudy", "sql", "select count(*) from concept_freq where count > 0", "-w", ws, "-f",
                            "csv"], capture_output=True, text=True, timeout=600)
    assert query.returncode == 0 and query.stdout.split() == ["count_star()", "2"], query.stderr[-2000:]
    bad = subprocess.run([VENV_BIN / "tailstudy", "match", tmp_path / "missing.csv", "--vocab", "imagenet1k", "-w",
                          ws], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "missing.csv" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("args, needle", [
    (["--caption-col", "caption"], "no caption column 'caption'"),
    (["--method", "fuzzy"], "--method fuzzy"),
    (["--threshold", "0.5"], "--threshold applies only to --method semantic"),
    (["--vocab", "nope.yaml"], "nope.yaml: no such vocabulary file"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, monkeypatch, capsys, args, needle):
    src = tmp_path / "web.csv"
    src.write_text("TEXT\ngoldfish\n", encoding="utf-8")
    base = ["match", str(src), "-w", str(tmp_path / "ws")]
    (tmp_path / "ws").mkdir()
    if "--vocab" not in args:
        base += ["--vocab", "imagenet1k"]
    code, _, err = run_cli(monkeypatch, capsys, *base, *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "ws" / "match").exists()


def test_cli_empty_vocabulary(tmp_path, monkeypatch, capsys):
    src = tmp_path / "web.csv"
    src.write_text("caption\ngoldfish\n", encoding="utf-8")
    empty = tmp_path / "empty.csv"
    empty.write_text("name,synonyms\n", encoding="utf-8")
    (tmp_path / "ws").mkdir()
    code, _, err = run_cli(monkeypatch, capsys, "match", str(src), "--vocab", str(empty), "-w", str(tmp_path / "ws"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"{empty}: vocabulary is empty" in err, err
