"""`tailstudy` as a user runs it: the console script in a subprocess, the catalog from the duckdb CLI."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import TINY_SPEC, VENV_BIN, cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    spec = root / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    ws = root / "ws"
    ws.mkdir()
    first = cli("run", str(spec), "--workspace", str(ws))
    assert first.returncode == 0, first.stderr[-2000:]
    return spec, ws, first


def test_run_prints_stages_and_results_table(study):
    _, _, first = study
    assert "ran     corpus" in first.stdout
    assert "Results" in first.stdout and "rho_pred" in first.stdout
    assert "report:" in first.stdout


def test_rerun_says_everything_was_reused(study):
    spec, ws, _ = study
    again = cli("run", str(spec), "-w", str(ws))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "stages: 0 ran," in again.stdout
    assert "reused  train" in again.stdout


def test_sql_top_concepts_in_three_formats(study):
    _, ws, _ = study
    query = "select name, count from concept_freq order by count desc limit 5"
    table = cli("sql", query, "-w", str(ws))
    assert table.returncode == 0, table.stderr
    rows = json.loads(cli("sql", query, "-w", str(ws), "--format", "json").stdout)
    assert len(rows) == 5 and rows[0]["count"] >= rows[-1]["count"] > 0
    assert all(r["name"] in table.stdout for r in rows)
    csv_lines = cli("sql", query, "-w", str(ws), "--format", "csv").stdout.strip().splitlines()
    assert csv_lines[0] == "name,count" and len(csv_lines) == 6


def test_duckdb_cli_sees_the_same_views_read_only(study):
    _, ws, _ = study
    query = "select count(*) as n from run_metrics"
    ours = json.loads(cli("sql", query, "-w", str(ws), "--format", "json").stdout)[0]["n"]
    assert ours == 8
    # view paths are relative to the workspace: the DuckDB CLI sets file_search_path (or runs in the workspace)
    duck = subprocess.run([str(VENV_BIN / "duckdb"), "-readonly", "-csv", "-cmd", f"SET file_search_path='{ws}'",
                           str(ws / "catalog.duckdb"), "-c", query], capture_output=True, text=True, timeout=60)
    assert duck.returncode == 0, duck.stderr
    assert duck.stdout.strip().splitlines()[-1] == str(ours)
    views = subprocess.run([str(VENV_BIN / "duckdb"), "-readonly", "-csv", str(ws / "catalog.duckdb"), "-c",
                            "select view_name from duckdb_views() where not internal order by 1"],
                           capture_output=True, text=True, timeout=60).stdout
    for view in ("captions", "concepts", "matches", "concept_freq", "subsets", "runs", "per_class", "run_metrics"):
        assert view in views


def _digests(views: list[str]) -> str:
    """One query: per view, its row count and an md5 of its rows as DuckDB renders them (same version everywhere)."""
    return " UNION ALL ".join(
        f"SELECT '{v}' AS view, count(*) AS n, coalesce(md5(string_agg(r::VARCHAR, chr(10) ORDER BY r::VARCHAR)), "
        f"'') AS digest FROM {v} AS r" for v in views) + " ORDER BY view"


def test_every_view_gives_the_same_rows_from_every_client(study, tmp_path, monkeypatch):
    """The catalog's keys come from file names, which DuckDB reports absolute (file_search_path) or relative (the
    working directory): the DuckDB CLI run inside the workspace, Python's duckdb from its parent with a relative
    file_search_path, and `tailstudy sql` must all read the same rows, keys filled in."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, ws, _ = study
    copy = tmp_path / "workspace"  # the module's study, plus an indexed corpus and a downloads table
    shutil.copytree(ws, copy)
    corpus = next((copy / "corpus").glob("*/captions.parquet")).parent
    pq.write_table(pa.table({  # the per-sample table a downloaded corpus carries (pipeline/corpus/ingest.py)
        "sample_id": ["s0", "s1"], "url": ["http://127.0.0.1/a.png", "http://127.0.0.1/b.png"],
        "status": ["success", "failed_to_download"], "error_kind": [None, "http_404"],
        "error_message": [None, "404"], "attempts": pa.array([1, 2], pa.int32()), "bytes": [10, 0],
        "width": pa.array([32, None], pa.int32()), "height": pa.array([32, None], pa.int32()),
        "original_width": pa.array([64, None], pa.int32()), "original_height": pa.array([64, None], pa.int32()),
        "sha256": ["ab", None], "shard": ["00000.tar", None], "key": ["000000000", None]}),
        corpus / "downloads.parquet")
    captions = tmp_path / "web.csv"
    captions.write_text("sample_id,caption\nw1,a red fox in the snow\nw2,a goldfish bowl\nw3,nothing here\n")
    done = cli("match", str(captions), "--vocab", "imagenet1k", "--index", "-j", "1", "-w", str(copy))
    assert done.returncode == 0, done.stderr  # also rebuilds the catalog over the copy
    with duckdb.connect(str(copy / "catalog.duckdb"), read_only=True) as con:
        views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal UNION "
                                           "SELECT table_name FROM duckdb_tables() WHERE NOT internal").fetchall()]
        keys = con.execute("SELECT table_name, column_name FROM duckdb_columns() WHERE NOT internal AND "
                           "column_name LIKE '%\\_key' ESCAPE '\\'").fetchall()
    query = _digests(sorted(views))
    duck = subprocess.run([str(VENV_BIN / "duckdb"), "-readonly", "-csv", "catalog.duckdb", "-c", query],
                          capture_output=True, text=True, timeout=120, cwd=copy)
    assert duck.returncode == 0, duck.stderr
    monkeypatch.chdir(tmp_path)
    with duckdb.connect("workspace/catalog.duckdb", read_only=True) as con:
        con.execute("SET file_search_path = 'workspace'")
        python = con.execute(query).fetchall()
    ours = cli("sql", query, "--format", "csv", "-w", str(copy))
    assert ours.returncode == 0, ours.stderr
    as_rows = lambda text: [tuple(line.split(",")) for line in text.strip().splitlines()[1:]]  # noqa: E731
    python = [(v, str(n), d) for v, n, d in python]
    assert as_rows(duck.stdout) == python == as_rows(ours.stdout)
    counts = {v: int(n) for v, n, _ in python}
    for view in ("captions", "downloads", "matches", "concept_freq", "imbalance", "subsets", "subset_freq",
                 "train_log", "indexed_captions", "tokens", "concept_freq_urls", "run_metrics"):
        assert counts[view] > 0, view
    empty = " UNION ALL ".join(f"SELECT '{t}.{c}' AS col, count(*) AS n FROM {t} WHERE coalesce({c}, '') = ''"
                               for t, c in keys)
    blank = subprocess.run([str(VENV_BIN / "duckdb"), "-readonly", "-csv", "catalog.duckdb", "-c",
                            f"SELECT col FROM ({empty}) WHERE n > 0"], capture_output=True, text=True, cwd=copy)
    assert blank.returncode == 0 and blank.stdout.split() == ["col"], blank.stdout + blank.stderr


def test_status_lists_artifacts(study):
    _, ws, _ = study
    out = cli("status", "-w", str(ws)).stdout
    for stage in ("corpus", "match", "frequency", "curate", "train", "evaluate", "report"):
        assert stage in out


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_user_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_SPEC.replace("seeds: [0]", "seeds: [0]\nepochz: 3"))
    assert "epochz: unknown key" in one_line_error(cli("run", str(bad), "-w", str(tmp_path / "ws")))
    assert "no such spec file" in one_line_error(cli("run", str(tmp_path / "missing.yaml")))
    empty = tmp_path / "empty.csv"
    empty.write_text("name,synonyms\n")
    spec = tmp_path / "emptyvocab.yaml"
    spec.write_text(TINY_SPEC + f"vocabulary: {empty}\n")
    assert "vocabulary is empty" in one_line_error(cli("run", str(spec), "-w", str(tmp_path / "ws")))
    assert not (tmp_path / "ws").exists()  # nothing half-written
    assert "unknown stage" in one_line_error(cli("run", "--force", "trian"))


def test_sql_errors_and_empty_workspace(tmp_path):
    ws = tmp_path / "fresh"
    assert "fresh (-w) does not exist" in one_line_error(cli("sql", "select 1", "-w", str(ws)))
    ws.mkdir()
    assert "no catalog yet" in one_line_error(cli("sql", "select 1", "-w", str(ws)))
    assert cli("catalog", "-w", str(ws)).returncode == 0
    rows = json.loads(cli("sql", "select count(*) as n from runs", "-w", str(ws), "--format", "json").stdout)
    assert rows == [{"n": 0}]
    assert "SQL error" in one_line_error(cli("sql", "select * from no_such_view", "-w", str(ws)))


def test_every_documented_query_runs(study):
    from tailstudy.catalog import named_queries

    _, ws, _ = study
    for name in named_queries():
        proc = cli("sql", f"@{name}", "-w", str(ws), "--format", "json")
        assert proc.returncode == 0, (name, proc.stderr)
        assert isinstance(json.loads(proc.stdout), list)
    rows = json.loads(cli("sql", "@run_summary", "-w", str(ws), "--format", "json").stdout)
    assert {r["level"] for r in rows} == {"natural", "balanced", "a_cname", "full"}
    assert "no such documented query" in one_line_error(cli("sql", "@nope", "-w", str(ws)))


def test_run_takes_a_task_runner(study):
    spec, ws, _ = study
    again = cli("run", str(spec), "-w", str(ws), "--task-runner", "threads:2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "stages: 0 ran," in again.stdout  # the runner never changes a stage key
    assert "unknown task runner" in one_line_error(cli("run", str(spec), "-w", str(ws), "--task-runner", "gpu:9"))
