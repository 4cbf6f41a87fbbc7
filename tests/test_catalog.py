"""The catalog never blocks (rebuilt into a new file, renamed into place), travels (workspace-relative paths) and keys
every frequency artifact (match_key, frequency_key, input_digest)."""
from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from conftest import VENV_BIN, cli

CAPTIONS = ["a photo of a goldfish", "a tench in a net", "my dog, a beagle", "goldfish bowl", "nothing here"] * 4


@pytest.fixture
def matched(tmp_path: Path) -> Path:
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(CAPTIONS))], "caption": CAPTIONS})
    frame.to_parquet(tmp_path / "x.parquet")
    frame.to_csv(tmp_path / "x.csv", index=False)
    (tmp_path / "ws").mkdir()
    done = cli("match", str(tmp_path / "x.parquet"), "--vocab", "imagenet1k", "-j", "1", "-w", str(tmp_path / "ws"))
    assert done.returncode == 0, done.stderr
    return tmp_path


def sql(ws: Path, query: str) -> pd.DataFrame:
    done = cli("sql", query, "--format", "json", "-w", str(ws))
    assert done.returncode == 0, done.stderr
    return pd.read_json(io.StringIO(done.stdout), orient="records")


def test_rebuild_with_connections_held_open(matched):
    ws = matched / "ws"
    reader = duckdb.connect(str(ws / "catalog.duckdb"), read_only=True)
    before = reader.execute("select count(*) from duckdb_views() where not internal").fetchone()[0]
    done = cli("match", str(matched / "x.csv"), "--vocab", "imagenet1k", "--name", "x_csv", "-j", "1", "-w", str(ws))
    assert done.returncode == 0, done.stderr
    # the held reader keeps its snapshot; a new connection sees the rebuilt catalog with both corpora
    assert reader.execute("select count(*) from duckdb_views() where not internal").fetchone()[0] == before
    assert sorted(sql(ws, "select distinct corpus from concept_freq").corpus) == ["x", "x_csv"]
    reader.close()
    writer = duckdb.connect(str(ws / "catalog.duckdb"))  # a read-write holder blocks nobody either
    done = cli("catalog", "-w", str(ws))
    assert done.returncode == 0, done.stderr
    writer.close()
    assert not list(ws.glob(".catalog-*")), "no temporary catalog file is left behind"


def test_moved_workspace_answers_without_rebuild(matched):
    catalog_bytes = (matched / "ws" / "catalog.duckdb").read_bytes()
    shutil.move(matched / "ws", matched / "moved")
    assert (matched / "moved" / "catalog.duckdb").read_bytes() == catalog_bytes
    frame = sql(matched / "moved", "select corpus, sum(count) as n from concept_freq group by corpus")
    assert frame.to_dict("records") == [{"corpus": "x", "n": 16}]
    assert len(sql(matched / "moved", "select * from reference_freq limit 5")) == 5
    # the DuckDB CLI, run in the workspace, resolves the same relative paths
    duck = subprocess.run([str(VENV_BIN / "duckdb"), "-readonly", "-csv", "catalog.duckdb", "-c",
                           "select sum(count) as n from concept_freq"], capture_output=True, text=True,
                          cwd=matched / "moved")
    assert duck.returncode == 0 and duck.stdout.split() == ["n", "16"], duck.stderr


def test_key_columns_and_a_taken_corpus_name(matched):
    ws = matched / "ws"
    done = cli("match", str(matched / "x.csv"), "--vocab", "imagenet1k", "-j", "1", "-w", str(ws))
    assert done.returncode == 2 and "--name" in done.stderr
    assert "corpus name 'x' (imagenet1k, phrase) is taken" in done.stderr
    assert len(list((ws / "frequency").iterdir())) == 1, "the refused match left no frequency artifact"
    keys = sql(ws, "select distinct frequency_key, match_key, input_digest from concept_freq")
    assert len(keys) == 1 and keys.notna().all(axis=None)
    assert (ws / "frequency" / keys.frequency_key[0]).is_dir() and (ws / "match" / keys.match_key[0]).is_dir()
    imbalance = sql(ws, "select frequency_key, input_digest from imbalance")
    assert imbalance.to_dict("records") == keys[["frequency_key", "input_digest"]].to_dict("records")
    matches = sql(ws, "select distinct match_key, input_digest from matches")
    assert matches.to_dict("records") == keys[["match_key", "input_digest"]].to_dict("records")


def test_cli_version_formats_and_choices(matched):
    from tailstudy import __version__

    assert cli("--version").stdout.strip() == f"tailstudy {__version__}"
    ws = str(matched / "ws")
    status = pd.read_json(io.StringIO(cli("status", "--format", "json", "-w", ws).stdout), orient="records")
    assert set(status.stage) == {"vocab", "match", "frequency"}
    frequency = status[status.stage == "frequency"].rows.iloc[0]
    assert isinstance(frequency, dict) and frequency["concept_freq"] > 0, frequency  # an object, not "a=1, b=2"
    summed = cli("sql", "select sum(count) as n, avg(count) as mean from concept_freq where count > 0", "-w", ws)
    assert summed.stdout.split("\n")[3].split() == ["│", "16", "│", "5.333", "│"], summed.stdout  # HUGEINT sum
    lines = cli("status", "-f", "csv", "-w", ws).stdout.splitlines()
    assert lines[0] == "stage,key,rows,seconds" and len(lines) == 4
    bad = cli("status", "--format", "xml", "-w", ws)
    assert bad.returncode == 2 and "xml" in bad.stderr
    bad = cli("export", "caption=full", str(matched / "e"), "--format", "tar", "-w", ws)
    assert bad.returncode == 2 and not (matched / "e").exists()


def test_help_alias_and_flags_without_a_type():
    """`-h` is `--help` for every command; a flag shows no value type (typer 0.29 printed `<bool>` for each), a
    repeatable option names what it takes (not `<list[str]>`)."""
    from typer.main import get_command
    from typer.testing import CliRunner

    from tailstudy.flows.cli import app

    runner = CliRunner()
    commands = list(get_command(app).commands)  # the three apps' commands, all at the top level
    assert {"run", "sql", "status", "match", "export", "deploy"} <= set(commands)
    for args in ([], *([name] for name in commands)):
        short, long = runner.invoke(app, [*args, "-h"]), runner.invoke(app, [*args, "--help"])
        assert short.exit_code == 0 and short.output == long.output and "Usage:" in short.output, args
        assert "<bool>" not in short.output and "<list[" not in short.output, args
    assert "--verbose" in runner.invoke(app, ["run", "-h"]).output
    assert cli("verify", "-h").returncode == 0  # the console script too


def test_missing_values_print_as_a_dash():
    from tailstudy.output import cell

    assert [cell(v) for v in (float("nan"), None, pd.NA, pd.NaT, 0.25, 3, "x")] == ["–", "–", "–", "–", "0.250", "3",
                                                                                     "x"]
    assert cell(1047.0, integral=True) == "1047" and cell(1047.0) == "1047.000"
