"""`tailstudy` as a user runs it: the console script in a subprocess, the catalog from the duckdb CLI."""
from __future__ import annotations

import json
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
