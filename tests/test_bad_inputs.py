"""A catalogue of bad inputs: each ends with exit 2 and one line naming the culprit, never a traceback.

Cases run the real `tailstudy` entry point (``tailstudy.cli.main``) in this process, so they stay fast; none reaches
Prefect (they fail in validation, before any orchestration starts). A few run the installed console script as a user
would, to check the process-level behaviour (exit code, catalog checksum) end to end.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import cli

PROGRESS = re.compile(r"\[\d\d:\d\d[<,]")  # a tqdm progress line (stderr), not a message
GOOD_SPEC = "name: t\ncorpus: {concepts: 10, samples: 200}\ntrain: {arch: tiny, epochs: 1}\n"


@pytest.fixture(autouse=True)
def _existing_workspace(tmp_path):
    """The cases name `-w tmp_path/ws`, which must exist (-w never creates a workspace): a missing one is its own
    case (test_a_missing_workspace_*), not what the others are about."""
    (tmp_path / "ws").mkdir()


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`tailstudy ARGS` through the console script's entry point, in this process -> (exit code, stdout, stderr)."""
    import tailstudy.flows.runner
    from tailstudy.flows import cli as cli_module

    def no_orchestration(*_args, **_kwargs):  # every case must be refused before a study starts
        raise AssertionError("the study started: this bad input was not rejected before work")

    monkeypatch.setattr(tailstudy.flows.runner, "run_study", no_orchestration)
    monkeypatch.setattr(sys, "argv", ["tailstudy", *args])
    monkeypatch.setenv("COLUMNS", "400")  # one logical line must not be wrapped by the console
    with pytest.raises(SystemExit) as exit_:
        cli_module.main()
    captured = capsys.readouterr()
    code = exit_.value.code if isinstance(exit_.value.code, int) else (0 if exit_.value.code is None else 1)
    return code, captured.out, captured.err


def assert_one_line(code: int, err: str, *fragments: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.search(line)]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# ---------------------------------------------------------------- spec files given to `tailstudy run`

SPECS = {
    "missing_file": (None, ["no such spec file"]),
    "yaml_syntax": ("name: t\nfactors: [a\n", ["invalid YAML at line"]),
    "duplicate_top_key": ("name: t\nfactors: {imbalance: [natural]}\nfactors: {caption: [full]}\n",
                          ["duplicate key 'factors'", "line 3"]),
    "duplicate_nested_key": ("name: t\ntrain:\n  epochs: 1\n  epochs: 2\n", ["duplicate key 'epochs'", "line 4"]),
    "duplicate_key_flow_style": ("name: t\ntrain: {arch: tiny, arch: tiny}\n", ["duplicate key 'arch'"]),
    "repeated_seed": ("name: t\nseeds: [0, 0]\n", ["seeds", "0 is listed twice"]),
    "no_seeds": ("name: t\nseeds: []\n", ["seeds: needs at least one seed"]),
    "repeated_learner": ("name: t\nlearners: [clip, clip]\n", ["learners", "listed twice"]),
    "unknown_learner": ("name: t\nlearners: [resnet]\n", ["unknown learner 'resnet'"]),
    "unknown_factor": ("name: t\nfactors: {colour: [red]}\n", ["factors.colour: unknown factor"]),
    "repeated_level": ("name: t\nfactors: {imbalance: [natural, natural]}\n", ["repeated level"]),
    "empty_levels": ("name: t\nfactors: {imbalance: []}\n", ["needs at least one level"]),
    "unknown_top_key": ("name: t\nlearner: [clip]\n", ["learner: unknown key"]),
    "old_and_new_learners_key": ("name: t\nmodels: [sl]\nlearners: [sl]\n", ["learners: and models:", "old name"]),
    "old_and_new_evaluate_key": ("name: t\neval: {per_class: 2}\nevaluate: {per_class: 2}\n",
                                 ["evaluate: and eval:", "old name"]),
    "not_a_mapping": ("- name: t\n", ["must be a YAML mapping"]),
    "empty_file": ("", ["must be a YAML mapping"]),
    "bad_name": ("name: my study/1\n", ["name"]),
    "zero_epochs": ("name: t\ntrain: {epochs: 0}\n", ["train.epochs"]),
    "batch_of_one": ("name: t\ntrain: {batch_size: 1}\n", ["train.batch_size"]),
    "negative_lr": ("name: t\ntrain: {lr: -0.1}\n", ["train.lr"]),
    "unknown_device": ("name: t\ntrain: {device: tpu}\n", ["train.device"]),
    "unknown_arch": ("name: t\ntrain: {arch: ViT-Q-99}\n", ["train.arch: unknown model config 'ViT-Q-99'"]),
    "unknown_vocabulary": ("name: t\nvocabulary: nosuchvocab\n", ["nosuchvocab: no such vocabulary file"]),
    "unknown_corpus_source": ("name: t\ncorpus: {source: ftp}\n", ["corpus"]),
    "unknown_train_key": ("name: t\ntrain: {epoch: 3}\n", ["train.epoch: unknown key"]),
    "unknown_level": ("name: t\nfactors: {imbalance: [lumpy]}\n", ["factors.imbalance[0]"]),
}


@pytest.mark.parametrize("case", sorted(SPECS))
def test_bad_spec(case, tmp_path, monkeypatch, capsys):
    text, fragments = SPECS[case]
    spec = tmp_path / "spec.yaml"
    if text is not None:
        spec.write_text(text)
    code, _, err = run_main(monkeypatch, capsys, "run", str(spec), "-w", str(tmp_path / "ws"))
    assert_one_line(code, err, *fragments)
    assert not (tmp_path / "ws").exists() or not any((tmp_path / "ws").iterdir())  # nothing was built


def test_spec_that_is_not_utf8(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"name: t\xff\xfe\n")
    assert_one_line(*run_main(monkeypatch, capsys, "run", str(spec))[::2], "not UTF-8")


def test_cuda_without_a_gpu_is_refused_before_work(tmp_path, monkeypatch, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\ntrain: {device: cuda}\n")
    code, _, err = run_main(monkeypatch, capsys, "run", str(spec), "-w", str(tmp_path / "ws"))
    assert_one_line(code, err, str(spec), "train.device: cuda", "no CUDA device")
    assert not (tmp_path / "ws" / "corpus").exists()


RUN_OPTIONS = {
    "unknown_force_stage": (["--force", "curation"], ["--force curation: unknown stage"]),
    "unknown_task_runner": (["--task-runner", "gpu:9"], ["unknown task runner"]),
}


@pytest.mark.parametrize("case", sorted(RUN_OPTIONS))
def test_bad_run_option(case, tmp_path, monkeypatch, capsys):
    args, fragments = RUN_OPTIONS[case]
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD_SPEC)
    code, _, err = run_main(monkeypatch, capsys, "run", str(spec), "-w", str(tmp_path / "ws"), *args)
    assert_one_line(code, err, *fragments)


def _file_workspace(tmp_path: Path) -> Path:
    path = tmp_path / "ws-file"
    path.write_text("not a directory")
    return path


WORKSPACES = {
    "a_file": (_file_workspace, ["the workspace path is a file"]),
    "read_only": (lambda _tmp: Path("/sys"), ["/sys: the workspace is not writable"]),
    "does_not_exist": (lambda _tmp: Path("/sys/tailstudy-ws"), ["workspace /sys/tailstudy-ws (-w) does not exist"]),
}


@pytest.mark.parametrize("case", sorted(WORKSPACES))
@pytest.mark.parametrize("command", ["run", "match"])
def test_bad_workspace(case, command, tmp_path, monkeypatch, capsys):
    make, fragments = WORKSPACES[case]
    ws = make(tmp_path)
    if command == "run":
        spec = tmp_path / "spec.yaml"
        spec.write_text(GOOD_SPEC)
        args = ["run", str(spec)]
    else:
        captions = tmp_path / "caps.csv"
        captions.write_text("caption\na dog\n")
        args = ["match", str(captions), "--vocab", "imagenet100", "-j", "1"]
    code, _, err = run_main(monkeypatch, capsys, *args, "-w", str(ws))
    assert_one_line(code, err, *fragments)


# ---------------------------------------------------------------- a workspace that does not exist (a typo)
# The rule (flows/cli_common.py `open_workspace`): a workspace named by -w or $TAILSTUDY_WORKSPACE must exist; only the default
# ./workspace may be created, and only by run, match and ingest. Read-only commands create nothing.

def _command(command: str, tmp_path: Path) -> list[str]:
    spec, captions = tmp_path / "spec.yaml", tmp_path / "caps.csv"
    spec.write_text(GOOD_SPEC)
    captions.write_text("caption\na dog\n")
    return {"catalog": ["catalog"], "verify": ["verify"], "status": ["status"], "sql": ["sql", "select 1"],
            "export": ["export", "caption=full", str(tmp_path / "out")], "count": ["count", "fox"],
            "run": ["run", str(spec)], "match": ["match", str(captions), "--vocab", "imagenet100", "-j", "1"],
            "ingest": ["ingest", str(captions)]}[command]


def _tree(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


@pytest.mark.parametrize("command", ["catalog", "verify", "status", "sql", "export", "count", "run", "match", "ingest"])
def test_a_missing_workspace_is_refused_and_nothing_is_created(command, tmp_path, monkeypatch, capsys):
    args, missing = _command(command, tmp_path), tmp_path / "typo" / "ws"
    before = _tree(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, *args, "-w", str(missing))
    assert_one_line(code, err, f"workspace {missing} (-w) does not exist")
    assert _tree(tmp_path) == before and not out


@pytest.mark.parametrize("command", ["status", "run"])
def test_a_missing_workspace_from_the_environment_is_refused(command, tmp_path, monkeypatch, capsys):
    args, missing = _command(command, tmp_path), tmp_path / "nope"
    monkeypatch.setenv("TAILSTUDY_WORKSPACE", str(missing))
    code, _, err = run_main(monkeypatch, capsys, *args)
    line = assert_one_line(code, err, f"workspace {missing} ($TAILSTUDY_WORKSPACE) does not exist")
    assert ("unset TAILSTUDY_WORKSPACE" in line) == (command == "run") and not missing.exists()


def test_the_default_workspace_is_made_only_by_commands_that_build(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TAILSTUDY_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    args = _command("match", tmp_path)
    before = _tree(tmp_path)
    for command in ("status", "verify", "catalog", "sql"):
        code, _, err = run_main(monkeypatch, capsys, *_command(command, tmp_path))
        assert_one_line(code, err, f"workspace {tmp_path / 'workspace'} does not exist", "or give -w")
    assert _tree(tmp_path) == before
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == 0, err
    assert (tmp_path / "workspace" / "catalog.duckdb").is_file()


def test_console_script_refuses_a_missing_workspace(tmp_path):
    for args in (["verify", "-w"], ["run", "--workspace"]):
        done = cli(*args, str(tmp_path / "nope"), cwd=tmp_path)
        assert done.returncode == 2 and "does not exist" in done.stderr, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["ws"]  # the fixture's, and nothing else


# ---------------------------------------------------------------- vocabularies given to `tailstudy match`

VOCABS = {
    "punctuation_name.yaml": ("- name: '!!!'\n", ["row 1", "'!!!' has no letters or digits"]),
    "dash_name.csv": ("name\ndog\n—\n", ["row 2", "has no letters or digits"]),
    "definition_list.yaml": ("- {name: dog, definition: [a pet, a wolf]}\n", ["row 1", "'definition' must be text"]),
    "definition_number.json": ('[{"name": "dog", "definition": 3}]', ["'definition' must be text, not int"]),
    "duplicate_key.yaml": ("- name: dog\n  name: cat\n", ["duplicate key 'name'", "line 2"]),
    "duplicate_concept.csv": ("name\ndog\nDog\n", ["row 2: duplicate concept name 'Dog'"]),
    "empty.csv": ("name\n", ["vocabulary is empty"]),
    "unknown_field.yaml": ("- {name: dog, colour: brown}\n", ["unknown field 'colour'"]),
    "format.txt": ("dog\n", ["unsupported vocabulary format"]),
    "synonyms_number.yaml": ("- {name: dog, synonyms: 3}\n", ["'synonyms'/'negatives'"]),
    "broken.json": ('[{"name": "dog"', ["cannot parse"]),
    "row_number.json": ("[1]", ["row 1: expected a mapping"]),
    "no_name.yaml": ("- {synonyms: [hound]}\n", ["field 'name' is missing"]),
    "not_a_list.json": ('"dog"', ["expected a list of concepts"]),
}


@pytest.mark.parametrize("case", sorted(VOCABS))
def test_bad_vocabulary(case, tmp_path, monkeypatch, capsys):
    text, fragments = VOCABS[case]
    vocab = tmp_path / case
    vocab.write_text(text, encoding="utf-8")
    captions = tmp_path / "caps.csv"
    captions.write_text("caption\na dog\n")
    code, _, err = run_main(monkeypatch, capsys, "match", str(captions), "--vocab", str(vocab), "-j", "1",
                            "-w", str(tmp_path / "ws"))
    assert_one_line(code, err, case, *fragments)
    assert not (tmp_path / "ws" / "match").exists()


def test_missing_vocabulary_file(tmp_path, monkeypatch, capsys):
    captions = tmp_path / "caps.csv"
    captions.write_text("caption\na dog\n")
    code, _, err = run_main(monkeypatch, capsys, "match", str(captions), "--vocab", str(tmp_path / "nope.csv"))
    assert_one_line(code, err, "no such vocabulary file")


# ---------------------------------------------------------------- caption files given to `tailstudy match`

def _write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    if isinstance(content, pa.Table):
        pq.write_table(content, path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


CAPTIONS = {
    "duplicate_ids": ("c.csv", "sample_id,caption\n1,a dog\n2,a cat\n1,a bird\n", [],
                      ["duplicate sample id '1'"]),
    "duplicate_ids_named_column": ("c.csv", "uid,caption\na,x\nb,y\nb,z\n", ["--id-col", "uid"],
                                   ["column 'uid': duplicate sample id 'b'"]),
    "duplicate_ids_parquet": ("c.parquet", pa.table({"sample_id": [5, 6, 5], "caption": ["a", "b", "c"]}), [],
                              ["duplicate sample id '5'"]),
    "list_id_column": ("c.parquet", pa.table({"sample_id": [[1], [2]], "caption": ["a dog", "a cat"]}), [],
                       ["id column 'sample_id' holds list"]),
    "struct_id_column": ("c.parquet", pa.table({"uid": [{"a": 1}], "caption": ["a dog"]}), ["--id-col", "uid"],
                         ["id column 'uid' holds struct"]),
    "no_caption_column": ("c.csv", "sample_id,words\n1,a dog\n", [], ["no caption column"]),
    "named_caption_column_missing": ("c.csv", "caption\na dog\n", ["--caption-col", "alt"],
                                     ["no caption column 'alt'"]),
    "named_id_column_missing": ("c.csv", "caption\na dog\n", ["--id-col", "uid"], ["no id column 'uid'"]),
    "numeric_caption_column": ("c.parquet", pa.table({"caption": [1, 2]}), [], ["holds int64, not text"]),
    "unsupported_extension": ("c.xlsx", "caption\na dog\n", [], ["unsupported caption file"]),
    "missing_id": ("c.parquet", pa.table({"sample_id": ["a", None], "caption": ["x", "y"]}), [],
                   ["missing id at row"]),
    "bad_utf8": ("c.csv", b"caption\na dog\n\xff\xfe cat\n", [], ["not valid UTF-8"]),
    "not_parquet": ("c.parquet", b"this is not parquet", [], ["not a readable Parquet file"]),
    "jsonl_not_objects": ("c.jsonl", "[1, 2]\n", [], ["a JSON object per line expected"]),
}


@pytest.mark.parametrize("case", sorted(CAPTIONS))
def test_bad_captions(case, tmp_path, monkeypatch, capsys):
    name, content, extra, fragments = CAPTIONS[case]
    path = _write(tmp_path, name, content)
    code, _, err = run_main(monkeypatch, capsys, "match", str(path), "--vocab", "imagenet100", "-j", "1",
                            "-w", str(tmp_path / "ws"), *extra)
    assert_one_line(code, err, *fragments)
    assert not (tmp_path / "ws" / "match").exists() or not any(
        p for p in (tmp_path / "ws" / "match").iterdir() if not p.name.startswith("."))


def test_duplicate_ids_across_files_of_a_folder(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "captions"
    folder.mkdir()
    (folder / "a.csv").write_text("sample_id,caption\nx1,a dog\nx2,a cat\n")
    (folder / "b.csv").write_text("sample_id,caption\nx3,a bird\nx2,a fish\n")
    code, _, err = run_main(monkeypatch, capsys, "match", str(folder), "--vocab", "imagenet100", "-j", "1",
                            "-w", str(tmp_path / "ws"))
    assert_one_line(code, err, "duplicate sample id 'x2'")


@pytest.mark.parametrize("what", ["missing_file", "empty_folder"])
def test_caption_input_that_is_not_there(what, tmp_path, monkeypatch, capsys):
    path = tmp_path / "captions"
    if what == "empty_folder":
        path.mkdir()
    code, _, err = run_main(monkeypatch, capsys, "match", str(path), "--vocab", "imagenet100")
    assert_one_line(code, err, str(path))


MATCH_OPTIONS = {
    "unknown_method": (["--method", "fuzzy"], ["--method fuzzy"]),
    "threshold_without_semantic": (["--threshold", "0.5"], ["--threshold applies only to --method semantic"]),
    "threshold_out_of_range": (["--method", "semantic", "--threshold", "1.5"], ["must be between 0 and 1"]),
    "zero_workers": (["--workers", "0"], ["--workers 0: must be at least 1"]),
}


@pytest.mark.parametrize("case", sorted(MATCH_OPTIONS))
def test_bad_match_option(case, tmp_path, monkeypatch, capsys):
    args, fragments = MATCH_OPTIONS[case]
    captions = _write(tmp_path, "c.csv", "caption\na dog\n")
    code, _, err = run_main(monkeypatch, capsys, "match", str(captions), "--vocab", "imagenet100", *args)
    assert_one_line(code, err, *fragments)


# ---------------------------------------------------------------- `tailstudy sql`

@pytest.fixture(scope="module")
def sql_ws(tmp_path_factory):
    """A workspace with a catalog (a small match: vocab, match and frequency artifacts; no Prefect)."""
    from tailstudy import catalog
    from tailstudy.stages import match_captions
    from tailstudy.store import Workspace

    root = tmp_path_factory.mktemp("sql")
    captions = root / "caps.csv"
    captions.write_text("sample_id,caption\n1,a photo of a goldfish\n2,a tench in a net\n3,a cat\n")
    ws = Workspace(root / "ws")
    match_captions(ws, captions, "imagenet100", workers=1)
    catalog.refresh(ws)
    return ws


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


SQL = {
    "copy_to_catalog": ("COPY (SELECT 1) TO '{ws}/catalog.duckdb'", ["COPY statements are not allowed"]),
    "copy_to_workspace_file": ("COPY concept_freq TO '{ws}/leak.csv'", ["COPY statements are not allowed"]),
    "install": ("INSTALL httpfs", ["LOAD statements are not allowed"]),
    "load": ("LOAD httpfs", ["LOAD statements are not allowed"]),
    "attach": ("ATTACH '{ws}/other.duckdb' AS other", ["ATTACH statements are not allowed"]),
    "detach": ("DETACH catalog", ["DETACH statements are not allowed"]),
    "read_csv_outside": ("SELECT * FROM read_csv('/etc/passwd')", ["not allowed", "/etc/passwd"]),
    "read_text_outside": ("SELECT * FROM read_text('/etc/hostname')", ["not allowed", "/etc/hostname"]),
    "read_blob_outside": ("SELECT * FROM read_blob('/etc/hostname')", ["not allowed"]),
    "glob_root": ("SELECT * FROM glob('/root/**')", ["not allowed", "/root/**"]),
    "relative_escape": ("SELECT * FROM read_csv('../../../../etc/passwd')", ["not allowed"]),
    "parquet_outside": ("SELECT * FROM read_parquet('/tmp/*.parquet')", ["not allowed"]),
    "create_table": ("CREATE TABLE t AS SELECT 1", ["CREATE statements are not allowed"]),
    "create_temp_table": ("CREATE TEMP TABLE t AS SELECT 1", ["CREATE statements are not allowed"]),
    "insert": ("INSERT INTO concept_freq VALUES (1)", ["INSERT statements are not allowed"]),
    "update": ("UPDATE concept_freq SET count = 0", ["UPDATE statements are not allowed"]),
    "delete": ("DELETE FROM concept_freq", ["DELETE statements are not allowed"]),
    "drop": ("DROP VIEW concept_freq", ["DROP statements are not allowed"]),
    "alter": ("ALTER VIEW concept_freq RENAME TO f", ["ALTER statements are not allowed"]),
    "set_external_access": ("SET enable_external_access = true", ["SET statements are not allowed"]),
    "set_allowed_directories": ("SET allowed_directories = ['/']", ["SET statements are not allowed"]),
    "reset": ("RESET lock_configuration", ["statements are not allowed"]),
    "export_database": ("EXPORT DATABASE '{ws}/dump'", ["EXPORT statements are not allowed"]),
    "select_then_copy": ("SELECT 1; COPY (SELECT 1) TO '{ws}/x.csv'", ["COPY statements are not allowed"]),
    "empty": ("", ["SQL: empty query"]),
    "blank": ("   ", ["SQL: empty query"]),
    "comment_only": ("/* nothing here */", ["SQL: empty query"]),
    "syntax_error": ("SELEC 1", ["SQL error", "syntax error"]),
    "unknown_view": ("SELECT * FROM no_such_view", ["SQL error"]),
    "unknown_named_query": ("@no_such_query", ["no such documented query"]),
}


@pytest.mark.parametrize("case", sorted(SQL))
def test_sql_refused(case, sql_ws, monkeypatch, capsys):
    query, fragments = SQL[case]
    before = _digest(sql_ws.catalog_path)
    listing = sorted(p.name for p in sql_ws.root.iterdir())
    code, out, err = run_main(monkeypatch, capsys, "sql", query.format(ws=sql_ws.root), "-w", str(sql_ws.root))
    assert_one_line(code, err, *fragments)
    assert _digest(sql_ws.catalog_path) == before  # the catalog is intact
    assert sorted(p.name for p in sql_ws.root.iterdir()) == listing  # and nothing was written next to it


@pytest.mark.parametrize("args,fragment", [(["--limit", "-1"], "--limit -1")])
def test_bad_sql_option(args, fragment, sql_ws, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "sql", "select 1", "-w", str(sql_ws.root), *args)
    assert_one_line(code, err, fragment)


def test_sql_without_a_catalog(tmp_path, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "sql", "select 1", "-w", str(tmp_path / "ws"))
    assert_one_line(code, err, "no catalog yet")


def test_sql_still_reads_the_views_and_pivots(sql_ws, monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "sql", "select count(*) as n from concept_freq", "-w",
                              str(sql_ws.root), "--format", "csv")
    assert code == 0, err
    assert out.split() == ["n", "100"]
    code, out, err = run_main(monkeypatch, capsys, "sql", "@subset_freq_side_by_side", "-w", str(sql_ws.root))
    assert code == 0, err


def test_table_output_is_limited_but_csv_is_not(sql_ws, monkeypatch, capsys):
    query = "select * from range(2500)"
    code, out, err = run_main(monkeypatch, capsys, "sql", query, "-w", str(sql_ws.root), "--limit", "10")
    assert code == 0 and "showing the first 10 rows; there are more" in err  # LIMIT 11 inside the query
    assert out.count("\n") < 30
    code, out, _ = run_main(monkeypatch, capsys, "sql", query, "-w", str(sql_ws.root), "--format", "csv")
    assert code == 0 and len(out.splitlines()) == 2501


def test_console_script_copy_to_is_exit_2_and_catalog_intact(sql_ws):
    before = _digest(sql_ws.catalog_path)
    done = cli("sql", f"COPY (SELECT 42) TO '{sql_ws.catalog_path}'", "-w", str(sql_ws.root))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert _digest(sql_ws.catalog_path) == before


# ---------------------------------------------------------------- status / verify / catalog on damaged workspaces

def test_catalog_refresh_names_an_unreadable_parquet(sql_ws, tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    shutil.copytree(sql_ws.root, ws, dirs_exist_ok=True)
    freq = next(ws.glob("frequency/*/concept_freq.parquet"))
    freq.write_bytes(freq.read_bytes()[: freq.stat().st_size // 2])
    code, _, err = run_main(monkeypatch, capsys, "catalog", "-w", str(ws))
    assert_one_line(code, err, "catalog view concept_freq", str(freq))


def test_verify_names_a_corrupt_manifest(sql_ws, tmp_path, monkeypatch, capsys):
    ws = tmp_path / "ws"
    shutil.copytree(sql_ws.root, ws, dirs_exist_ok=True)
    manifest = next(ws.glob("vocab/*/manifest.json"))
    manifest.write_text('{"stage": "vo')
    code, _, err = run_main(monkeypatch, capsys, "verify", "-w", str(ws))
    assert_one_line(code, err, str(manifest), "corrupt manifest")


INGEST_OPTIONS = {
    "zero_image_size": (["--image-size", "0"], ["image_size"]),
    "zero_cap": (["--max-image-mb", "0"], ["max_image_mb"]),
    "unknown_preset": (["--preset", "yfcc"], ["preset"]),
    "missing_url_list": ([], ["no such"]),
}


@pytest.mark.parametrize("case", sorted(INGEST_OPTIONS))
def test_bad_ingest_option(case, tmp_path, monkeypatch, capsys):
    args, fragments = INGEST_OPTIONS[case]
    urls = tmp_path / "urls.csv"
    if case != "missing_url_list":
        urls.write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,a dog\n")
    code, _, err = run_main(monkeypatch, capsys, "ingest", str(urls), "-w", str(tmp_path / "ws"), *args)
    assert_one_line(code, err, *fragments)


def test_relative_paths_never_reach_the_callers_directory(sql_ws, tmp_path, monkeypatch, capsys):
    (tmp_path / "secret.txt").write_text("do not read")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, "sql", "select content from read_text('secret.txt')", "-w",
                              str(sql_ws.root), "--format", "csv")
    assert "do not read" not in out
    assert code in (0, 2) and "Traceback" not in err


# ---------------------------------------------------------------- specs checked by their consequences (issue 23)

CONSEQUENCES = {
    "name_dotdot": ("name: '..'\n", ["name", "names a directory"]),
    "name_dot": ("name: .\n", ["name", "names a directory"]),
    "name_300_chars": (f"name: {'n' * 300}\n", ["name", "at most 64 characters"]),
    "negative_seed": ("name: t\nseeds: [-1]\n", ["seeds.0", "greater than or equal to 0"]),
    "seed_over_2_63": ("name: t\nseeds: [9223372036854775808]\n", ["seeds.0", "less than or equal to 4294967295"]),
    "negative_corpus_seed": ("name: t\ncorpus: {seed: -5}\n", ["corpus.seed"]),
    "lr_inf": ("name: t\ntrain: {lr: .inf}\n", ["train.lr", "finite"]),
    "lr_nan": ("name: t\ntrain: {lr: .nan}\n", ["train.lr", "finite"]),
    "weight_decay_inf": ("name: t\ntrain: {weight_decay: .inf}\n", ["train.weight_decay", "finite"]),
    "scale_inf": ("name: t\nbase: {scale: .inf}\n", ["base.scale", "finite"]),
    "zipf_nan": ("name: t\ncorpus: {profile: {zipf: .nan}}\n", ["corpus.profile", "finite"]),
    "no_learners": ("name: t\nlearners: []\n", ["learners: needs at least one learner"]),
    "no_eval_classes": ("name: t\nevaluate: {classes: []}\n", ["evaluate.classes", "at least one class"]),
    "unknown_profile": ("name: t\ncorpus: {profile: laion9000}\n", ["corpus.profile", "unknown profile 'laion9000'"]),
}
# refused by `tailstudy run`'s checks of the machine and the world, before the first stage
RUN_CONSEQUENCES = {
    "world_over_capacity": ("name: t\ncorpus: {concepts: 300, open_concepts: 0}\n", ["corpus", "fit the world"]),
    "open_world_over_capacity": ("name: t\ncorpus: {concepts: 200, open_concepts: 100}\n", ["fit the world"]),
    "samples_1e15": ("name: t\ncorpus: {samples: 1000000000000000}\n", ["images", "on disk", "free"]),
    "per_class_1e12": ("name: t\nevaluate: {per_class: 1000000000000}\n", ["evaluate.per_class", "on disk"]),
    "min_count_1e9": ("name: t\ncorpus: {min_count: 1000000000}\n", ["corpus.min_count", "on disk"]),
    "batch_of_a_billion": ("name: t\ntrain: {arch: tiny, batch_size: 1000000000}\n",
                           ["train.batch_size", "of memory", "available"]),
    "eval_class_not_in_the_world": ("name: t\ncorpus: {concepts: 10, samples: 200}\nevaluate: {classes: [nosuch, goose]}\n",
                                    ["evaluate.classes: unknown class 'nosuch'"]),
    "base_class_not_in_the_world": ("name: t\ncorpus: {concepts: 10, samples: 200}\nbase: {concepts: [nosuch, goose]}\n",
                                    ["base.concepts: unknown class 'nosuch'"]),
    "more_classes_than_targets": ("name: t\ncorpus: {concepts: 10, samples: 200}\nfactors: {concepts: [all, 50]}\n",
                                  ["factors.concepts 50", "50 classes asked, the corpus has 10"]),
}


@pytest.mark.parametrize("case", sorted(CONSEQUENCES))
def test_spec_refused_by_its_consequences(case, tmp_path, monkeypatch, capsys):
    text, fragments = CONSEQUENCES[case]
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    code, _, err = run_main(monkeypatch, capsys, "run", str(spec), "-w", str(tmp_path / "ws"))
    assert_one_line(code, err, str(spec), *fragments)
    assert not (tmp_path / "ws").exists() or not any((tmp_path / "ws").iterdir())


@pytest.mark.parametrize("case", sorted(RUN_CONSEQUENCES))
def test_run_refuses_what_the_machine_or_world_cannot_hold(case, tmp_path, monkeypatch, capsys):
    text, fragments = RUN_CONSEQUENCES[case]
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    code, _, err = run_main(monkeypatch, capsys, "run", str(spec), "-w", str(tmp_path / "ws"))
    assert_one_line(code, err, str(spec), *fragments)
    assert not any((tmp_path / "ws").iterdir())  # no stage ran


@pytest.mark.parametrize("case", ["world_over_capacity", "samples_1e15", "eval_class_not_in_the_world"])
def test_a_flow_run_checks_the_same_before_its_first_stage(case, tmp_path):
    """A study submitted to a server starts in `open_study` on its worker, not in `tailstudy run`: the same refusal,
    before any stage."""
    from tailstudy.errors import SpecError
    from tailstudy.flows.study import open_study

    text, fragments = RUN_CONSEQUENCES[case]
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    (tmp_path / "ws").mkdir(exist_ok=True)
    with pytest.raises(SpecError) as refused:
        open_study(str(spec), str(tmp_path / "ws"), None)
    assert all(fragment in str(refused.value) for fragment in fragments), str(refused.value)
    assert not any((tmp_path / "ws").iterdir())


@pytest.mark.parametrize("args,fragment", [(["--lock-timeout", "nan"], "--lock-timeout nan"),
                                           (["--lock-timeout", "inf"], "--lock-timeout inf"),
                                           (["--lock-timeout", "-1"], "--lock-timeout -1")])
def test_lock_timeout_must_be_a_number_of_seconds(args, fragment, tmp_path, monkeypatch, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOOD_SPEC)
    code, _, err = run_main(monkeypatch, capsys, "run", str(spec), "-w", str(tmp_path / "ws"), *args)
    assert_one_line(code, err, fragment)


@pytest.mark.parametrize("args,fragment", [(["--retry-wait", "inf"], "retry_wait"),
                                           (["--retry-wait", "nan"], "retry_wait"),
                                           (["--retry-wait", "1e300"], "retry_wait")])
def test_ingest_retry_wait_is_finite(args, fragment, tmp_path, monkeypatch, capsys):
    urls = tmp_path / "urls.csv"
    urls.write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,a dog\n")
    code, _, err = run_main(monkeypatch, capsys, "ingest", str(urls), "-w", str(tmp_path / "ws"), *args)
    assert_one_line(code, err, fragment)


# ---------------------------------------------------------------- real captions: long, dictionary-typed, named twice

def _match_counts(monkeypatch, capsys, captions: Path, ws: Path) -> dict[str, int]:
    from tailstudy import catalog
    from tailstudy.store import Workspace

    code, _, err = run_main(monkeypatch, capsys, "match", str(captions), "--vocab", "imagenet100", "-j", "1",
                            "-w", str(ws))
    assert code == 0, err
    df = catalog.query(Workspace(ws), "select name, count from concept_freq where count > 0")
    return dict(zip(df["name"], df["count"]))


def test_a_one_megabyte_csv_caption_and_a_twenty_megabyte_json_caption_are_read(tmp_path, monkeypatch, capsys):
    long = "a goose " * 130_000  # 1 MB in one CSV field
    (tmp_path / "long.csv").write_text(f'caption\n"{long}"\na lorikeet\n')
    assert _match_counts(monkeypatch, capsys, tmp_path / "long.csv", tmp_path / "ws") == {"goose": 1, "lorikeet": 1}
    huge = "a rock crab on a rock " * 1_000_000  # 22 MB in one JSON line
    lines = [json.dumps({"caption": "a goose"}), json.dumps({"caption": huge}), json.dumps({"caption": "a lorikeet"})]
    (tmp_path / "huge.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "ws2").mkdir()
    assert _match_counts(monkeypatch, capsys, tmp_path / "huge.jsonl", tmp_path / "ws2") == {
        "goose": 1, "lorikeet": 1, "rock crab": 1}


def test_a_dictionary_typed_caption_column_is_text(tmp_path, monkeypatch, capsys):
    import pandas as pd

    frame = pd.DataFrame({"sample_id": pd.Categorical(["a", "b", "c"]),
                          "caption": pd.Categorical(["a goose", "a lorikeet", "a goose again"])})
    frame.to_parquet(tmp_path / "cat.parquet")
    assert pq.read_schema(tmp_path / "cat.parquet").field("caption").type.id == pa.dictionary(pa.int8(), pa.string()).id
    assert _match_counts(monkeypatch, capsys, tmp_path / "cat.parquet", tmp_path / "ws") == {"goose": 2, "lorikeet": 1}


@pytest.mark.parametrize("text,fragment", [("caption,caption\na goose,a lorikeet\n", "column 'caption' appears 2 times"),
                                           ("sample_id,caption,sample_id\n1,a goose,2\n",
                                            "column 'sample_id' appears 2 times")])
def test_a_column_named_twice_is_refused_by_name(text, fragment, tmp_path, monkeypatch, capsys):
    captions = tmp_path / "dup.csv"
    captions.write_text(text)
    code, _, err = run_main(monkeypatch, capsys, "match", str(captions), "--vocab", "imagenet100", "-w",
                            str(tmp_path / "ws"))
    assert_one_line(code, err, str(captions), fragment)


def test_url_lists_take_long_dictionary_captions_and_refuse_twice_named_columns(tmp_path):
    import pandas as pd

    from tailstudy.corpus.readers import read_url_list
    from tailstudy.errors import InputError
    from tailstudy.spec import UrlsCorpusSpec

    def read(path: Path):
        return read_url_list(UrlsCorpusSpec.model_validate({"source": "urls", "path": str(path)}))

    long = "a goose " * 2_700_000  # 21.6 MB: one JSON line
    (tmp_path / "urls.jsonl").write_text(json.dumps({"url": "http://127.0.0.1:9/a.jpg", "caption": long}) + "\n")
    assert read(tmp_path / "urls.jsonl").table.column("caption")[0].as_py() == long
    (tmp_path / "urls.csv").write_text(f'url,caption\nhttp://127.0.0.1:9/a.jpg,"{long[:1_100_000]}"\n')
    assert len(read(tmp_path / "urls.csv").table.column("caption")[0].as_py()) == 1_100_000
    pd.DataFrame({"url": ["http://127.0.0.1:9/a.jpg"], "caption": pd.Categorical(["a goose"])}).to_parquet(
        tmp_path / "urls.parquet")
    assert read(tmp_path / "urls.parquet").table.column("caption").to_pylist() == ["a goose"]
    (tmp_path / "dup.csv").write_text("url,caption,caption\nhttp://127.0.0.1:9/a.jpg,a goose,a lorikeet\n")
    with pytest.raises(InputError, match="column 'caption' appears 2 times"):
        read(tmp_path / "dup.csv")
