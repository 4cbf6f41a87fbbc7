"""`tailstudy sql` as an attacker would use it: every DuckDB statement type, every table function that touches files,
settings, profiling and logging, `@NAME` escapes and symlinks out of the workspace, from several current directories.

Whatever the query: nothing outside the workspace is read (secret files' contents never show) or written, no file in
the workspace changes (the trees are hashed before and after), and a refusal is one line with exit 2. One small
catalog is built once for the module; cases run the real entry point in this process (a few run the console script).
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, sigint_on_import, sigint_state, terminal_sigint
from tests.test_bad_inputs import assert_one_line, run_main

SECRET = "TAILSTUDY-SECRET-7f3a"


@pytest.fixture(scope="module")
def fence(tmp_path_factory):
    """base/ws (a workspace with a catalog), base/secret.txt and base/outside/inner.txt outside it, and inside it the
    symlinks ws/link -> base/outside and ws/flink.txt -> base/secret.txt."""
    from tailstudy import catalog
    from tailstudy.stages import match_captions
    from tailstudy.store import Workspace

    base = tmp_path_factory.mktemp("fence")
    captions = base / "caps.csv"
    captions.write_text("sample_id,caption\n1,a photo of a goldfish\n2,a tench in a net\n3,a cat\n")
    ws = Workspace(base / "ws")
    match_captions(ws, captions, "imagenet100", workers=1)
    catalog.refresh(ws)
    (base / "secret.txt").write_text(f"{SECRET},1\n")
    (base / "outside").mkdir()
    (base / "outside" / "inner.txt").write_text(f"{SECRET},2\n")
    (base / "outside" / "query.sql").write_text(f"SELECT '{SECRET}' AS leaked\n")
    (ws.root / "link").symlink_to(base / "outside", target_is_directory=True)
    (ws.root / "flink.txt").symlink_to(base / "secret.txt")
    (ws.root / "dump").mkdir()  # what EXPORT DATABASE writes; IMPORT DATABASE would run it
    subprocess.run([sys.executable, "-c", "import duckdb, os, sys; c = duckdb.connect(sys.argv[1]); "
                    "c.execute('create table t as select 42 as a'); c.execute('checkpoint'); "
                    "c.execute('insert into t values (7)'); os._exit(0)", str(ws.root / "w.duckdb")], check=True)
    assert (ws.root / "w.duckdb.wal").exists()  # a database with a WAL to replay: reading it must not write
    (ws.root / "dump" / "schema.sql").write_text("CREATE TABLE pwned (a VARCHAR);\n")
    (ws.root / "dump" / "load.sql").write_text(f"COPY pwned FROM '{base}/secret.txt';\n")
    return {"ws": ws.root, "base": base}


def tree(root: Path) -> dict[str, str]:
    """Every entry under root -> a digest of what it is (file content, link target, directory)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def listing(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def sql(monkeypatch, capsys, fence, query: str, cwd: Path, *args: str) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    query = query.replace("{ws}", str(fence["ws"])).replace("{base}", str(fence["base"]))
    return run_main(monkeypatch, capsys, "sql", query, "-w",
                    str(fence["ws"]), "--format", "csv", *args)


def assert_harmless(monkeypatch, capsys, fence, queries: list[str], cwd: Path, refused: bool = False) -> None:
    """Each query: no secret in the output, nothing changed in base/ (workspace included) or in the cwd; an error is
    one line with exit 2; `refused`: it must be an error."""
    before, cwd_before = tree(fence["base"]), listing(cwd)
    for query in queries:
        code, out, err = sql(monkeypatch, capsys, fence, query, cwd)
        assert SECRET not in out + err and "root:x:0" not in out + err, (query, out, err)
        if refused or code:
            assert_one_line(code, err)
        assert tree(fence["base"]) == before, query
        assert listing(cwd) == cwd_before, query
    assert Path.cwd() == cwd  # the command changes into the workspace only while its query runs


def cwds(fence) -> dict[str, Path]:
    return {"root": Path("/"), "parent": fence["base"], "workspace": fence["ws"], "outside": fence["base"] / "outside"}


# ---------------------------------------------------------------- statements other than a read

STATEMENTS = [
    "COPY (SELECT 42 AS x) TO '{ws}/catalog.duckdb'", "COPY concept_freq TO 'frequency/leak.parquet'",
    "COPY concept_freq TO '{base}/leak.csv'", "COPY reference_freq FROM '{base}/secret.txt'",
    "EXPORT DATABASE '{ws}/dump'", "EXPORT DATABASE '{base}/dump'", "IMPORT DATABASE '{base}/outside'",
    "IMPORT DATABASE '{ws}/dump'", "IMPORT DATABASE 'dump'", "PRAGMA import_database('dump')",
    "EXPLAIN ANALYZE COPY (SELECT 42 AS x) TO '{ws}/catalog.duckdb'", "EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/x.csv'",
    "EXPLAIN ANALYZE INSTALL httpfs", "EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", "EXPLAIN ANALYZE SELECT 1",
    "EXPLAIN SELECT 1", "EXPLAIN (FORMAT json) SELECT 1",
    "CALL enable_profiling(save_location='{ws}/profile.txt')", "CALL enable_logging(storage='file', "
    "storage_path='{ws}/logs')", "CALL checkpoint()", "CALL pragma_version()", "CALL enable_profiling()",
    "PRAGMA enable_profiling", "PRAGMA enable_profiling='json'", "PRAGMA profiling_output='{ws}/p.json'",
    "PRAGMA memory_limit='100GB'", "PRAGMA threads=64", "PRAGMA enable_checkpoint_on_shutdown",
    "PRAGMA import_database('{base}/outside')", "PRAGMA copy_database('catalog', 'x')",
    "SET enable_external_access = true", "SET allowed_directories = ['/']", "SET allowed_paths = ['/etc/passwd']",
    "SET lock_configuration = false", "RESET lock_configuration", "SET GLOBAL memory_limit = '1TB'",
    "SET threads = 64", "SET temp_directory = '{ws}'", "SET profiling_output = '{ws}/p.txt'",
    "SET enable_logging = true", "SET logging_storage = 'file'", "SET VARIABLE x = 1", "RESET VARIABLE x",
    "SET file_search_path = '/etc'", "USE memory",
    "ATTACH '{ws}/other.duckdb' AS o", "ATTACH '{ws}/catalog.duckdb' AS rw", "ATTACH ':memory:' AS m",
    "DETACH catalog", "INSTALL httpfs", "FORCE INSTALL json", "LOAD httpfs", "LOAD '{base}/x.duckdb_extension'",
    "UPDATE EXTENSIONS", "CHECKPOINT", "FORCE CHECKPOINT", "VACUUM", "VACUUM ANALYZE", "ANALYZE",
    "BEGIN TRANSACTION", "COMMIT", "ROLLBACK", "PREPARE p AS SELECT 1", "EXECUTE p", "DEALLOCATE p",
    "CREATE TABLE t AS SELECT 1", "CREATE TEMP TABLE t (a INT)", "CREATE OR REPLACE VIEW concept_freq AS SELECT 1",
    "CREATE MACRO m() AS 1", "CREATE SECRET (TYPE s3)", "CREATE PERSISTENT SECRET s (TYPE s3)",
    "CREATE SEQUENCE s", "CREATE SCHEMA s", "CREATE TYPE e AS ENUM ('a')", "CREATE INDEX i ON reference_freq(name)",
    "INSERT INTO reference_freq VALUES ('a', 'b', 1)", "UPDATE reference_freq SET count = 0",
    "DELETE FROM reference_freq", "TRUNCATE reference_freq", "DROP VIEW concept_freq", "DROP TABLE reference_freq",
    "ALTER VIEW concept_freq RENAME TO f", "COMMENT ON VIEW concept_freq IS 'x'",
    "MERGE INTO reference_freq USING (SELECT 1 AS a) s ON true WHEN MATCHED THEN DELETE",
    "SELECT 1; SELECT 2", "SELECT 1; COPY (SELECT 1) TO '{ws}/x.csv'", "SELECT 1; CALL enable_profiling()",
]


@pytest.mark.parametrize("where", ["root", "parent", "workspace"])
def test_every_statement_but_a_read_is_refused(where, fence, monkeypatch, capsys):
    assert_harmless(monkeypatch, capsys, fence, STATEMENTS, cwds(fence)[where], refused=True)


# ---------------------------------------------------------------- table functions that touch files

FILE_FUNCTIONS = [
    "SELECT * FROM read_text('{p}')", "SELECT * FROM read_blob('{p}')", "SELECT * FROM read_csv('{p}')",
    "SELECT * FROM read_csv_auto('{p}', header = false)", "SELECT * FROM read_csv('{p}', columns = {'a': 'VARCHAR'})",
    "SELECT * FROM read_json('{p}')", "SELECT * FROM read_json_auto('{p}')", "SELECT * FROM read_ndjson('{p}')",
    "SELECT * FROM read_json_objects('{p}')", "SELECT * FROM read_ndjson_objects('{p}')",
    "SELECT * FROM read_parquet('{p}')", "SELECT * FROM parquet_scan('{p}')", "SELECT * FROM parquet_metadata('{p}')",
    "SELECT * FROM parquet_schema('{p}')", "SELECT * FROM parquet_file_metadata('{p}')",
    "SELECT * FROM parquet_kv_metadata('{p}')", "SELECT * FROM parquet_full_metadata('{p}')",
    "SELECT * FROM parquet_bloom_probe('{p}', 'a', 1)", "SELECT * FROM sniff_csv('{p}')", "SELECT * FROM glob('{p}')",
    "SELECT * FROM '{p}'", "SELECT * FROM read_duckdb('{p}')", "SELECT content FROM read_text(['manifest.json', '{p}'])",
    "SELECT * FROM read_csv('{p}', filename = true, ignore_errors = true)",
    "SELECT (SELECT string_agg(content, '') FROM read_text('{p}')) AS x",
]
ABSOLUTE = ["/etc/passwd", "/etc/*", "{base}/secret.txt", "{base}/*", "{base}/outside/inner.txt", "{ws}/../secret.txt",
            "{ws}/link/inner.txt", "{ws}/link/*", "{ws}/flink.txt", "{ws}/*.txt", "{ws}/**/*.txt", "~/.bashrc",
            "file://{base}/secret.txt", "file:///etc/passwd", "{ws}/frequency/../../secret.txt"]
RELATIVE = ["secret.txt", "../secret.txt", "../../secret.txt", "link/inner.txt", "flink.txt", "*.txt", "../*",
            "etc/passwd", "./../outside/inner.txt"]


@pytest.mark.parametrize("function", FILE_FUNCTIONS)
def test_no_file_function_reaches_outside_the_workspace(function, fence, monkeypatch, capsys):
    queries = [function.replace("{p}", path) for path in ABSOLUTE]
    assert_harmless(monkeypatch, capsys, fence, queries, Path("/"))


@pytest.mark.parametrize("where", ["root", "parent", "outside"])
def test_relative_paths_resolve_in_the_workspace_whatever_the_cwd(where, fence, monkeypatch, capsys):
    queries = [function.replace("{p}", path) for function in FILE_FUNCTIONS[:4] + FILE_FUNCTIONS[10:11] + FILE_FUNCTIONS[19:21]
               for path in RELATIVE]
    assert_harmless(monkeypatch, capsys, fence, queries, cwds(fence)[where])


# ---------------------------------------------------------------- session, settings, profiling, logging

SESSION = [
    "SELECT * FROM enable_profiling(save_location = '{ws}/profile.txt')",
    "SELECT * FROM enable_profiling(save_location = '{base}/profile.txt')",
    "SELECT * FROM ENABLE_PROFILING()", "SELECT * FROM main.enable_profiling()", "SELECT * FROM disable_profiling()",
    "SELECT * FROM enable_logging(storage = 'file', storage_path = '{ws}/logs')",
    "SELECT * FROM enable_logging(storage = 'file', storage_path = '{base}/logs')",
    "SELECT (SELECT count(*) FROM enable_logging(storage = 'file', storage_path = '{ws}/logs')) AS n",
    "SELECT * FROM range(3), enable_profiling(save_location = '{ws}/p.txt')",
    "SELECT * FROM disable_logging()", "SELECT * FROM truncate_duckdb_logs()", "SELECT * FROM checkpoint()",
    "SELECT * FROM force_checkpoint()", "SELECT * FROM query('SELECT 1')", "SELECT * FROM query_table('concept_freq')",
    "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
    "WITH x AS (SELECT * FROM enable_logging()) SELECT * FROM x",
    # a PIVOT without IN list is two statements: the second would run with the logging / profiling the first enabled
    "PIVOT (SELECT * FROM range(3) r, enable_logging(storage = 'file', storage_path = 'logs')) ON range USING count(*)",
    "PIVOT (SELECT * FROM range(3) r, enable_profiling(save_location = 'p.txt')) ON range USING count(*)",
    "PIVOT (SELECT * FROM range(3) r, enable_logging(storage = 'file')) ON range IN (0, 1) USING count(*)",
    "PIVOT (SELECT * FROM range(3)) ON range USING count(*)",
]


@pytest.mark.parametrize("where", ["root", "workspace"])
def test_session_changing_functions_are_refused(where, fence, monkeypatch, capsys):
    assert_harmless(monkeypatch, capsys, fence, SESSION, cwds(fence)[where], refused=True)


def test_settings_are_locked_as_they_were_set(fence, monkeypatch, capsys):
    query = ("SELECT current_setting('enable_external_access') AS ext, current_setting('lock_configuration') AS locked,"
             " current_setting('allowed_directories') AS dirs, current_setting('allowed_paths') AS paths, "
             "current_setting('autoload_known_extensions') AS autoload, current_setting('temp_directory') AS tmp, "
             "current_setting('python_enable_replacements') AS py, current_setting('enable_profiling') AS prof, "
             "current_setting('profiling_output') AS prof_out, current_setting('enable_logging') AS logging")
    code, out, err = sql(monkeypatch, capsys, fence, query, Path("/"), "--format", "json")
    assert code == 0, err
    row = {k: str(v).lower() for k, v in json.loads(out)[0].items()}
    assert row["ext"] == "false" and row["locked"] == "true" and row["autoload"] == "false" and row["py"] == "false"
    assert row["prof"] in ("", "none") and row["prof_out"] == "" and row["logging"] in ("false", "0")
    assert "tailstudy-sql-" in row["tmp"] and str(fence["ws"]).lower() not in row["tmp"]
    # DuckDB adds the catalog's own files (and its WAL names) to allowed_paths: all inside the workspace
    assert all(p.startswith(f"{str(fence['ws']).lower()}/catalog.duckdb") for p in ast.literal_eval(row["paths"]))
    # the workspace, and DuckDB's own spill directory (private, new, removed afterwards), which DuckDB adds itself
    assert sorted(ast.literal_eval(row["dirs"])) == sorted([f"{str(fence['ws']).lower()}/", row["tmp"] + "/"])


# ---------------------------------------------------------------- @NAME: shipped queries only

@pytest.mark.parametrize("name", ["@../x", "@/etc/passwd", "@{base}/outside/query", "@../../sql/queries/top_concepts",
                                  "@top_concepts/../top_concepts", "@./top_concepts", "@", "@..", "@.sql",
                                  "@{base}/outside/query.sql", "@~/query"])
def test_named_queries_are_only_the_shipped_ones(name, fence, monkeypatch, capsys):
    code, out, err = sql(monkeypatch, capsys, fence, name, fence["base"])
    assert SECRET not in out
    assert_one_line(code, err, "no such documented query")


def test_what_a_user_reads_still_works(fence, monkeypatch, capsys):
    for query in ["select count(*) as n from concept_freq", "@top_concepts", "@top_concepts.sql",
                  "@subset_freq_side_by_side", "DESCRIBE concept_freq", "SHOW TABLES", "SUMMARIZE reference_freq",
                  "PRAGMA version", "FROM artifacts", "VALUES (1), (2)",
                  "PIVOT (SELECT * FROM range(3)) ON range IN (0, 1, 2) USING count(*)", "SELECT * FROM 'w.duckdb'", "SELECT count(*) FROM read_text('*/*/manifest.json')",
                  "SELECT count(*) FROM read_json('{ws}/frequency/*/manifest.json')",
                  "SELECT current_setting('threads') AS t", "SELECT * FROM duckdb_settings() LIMIT 3"]:
        before = tree(fence["base"])
        code, out, err = sql(monkeypatch, capsys, fence, query, Path("/"))
        assert code == 0, (query, err)
        assert tree(fence["base"]) == before
    code, out, _ = sql(monkeypatch, capsys, fence, "SELECT count(*) AS n FROM read_text('*/*/manifest.json')", Path("/"))
    assert out.split() == ["n", "3"]  # vocab, match, frequency: read from the workspace, relative to it


# ---------------------------------------------------------------- resources: rows, time, memory, Ctrl-C

def test_limit_is_applied_inside_the_query(fence, monkeypatch, capsys):
    started = time.monotonic()
    code, out, err = sql(monkeypatch, capsys, fence, "SELECT * FROM range(10000000000000)", Path("/"), "--limit", "5")
    assert code == 0 and out.split() == ["range", "0", "1", "2", "3", "4"], err
    assert "showing the first 5 rows" in err
    monkeypatch.chdir("/")
    code, out, err = run_main(monkeypatch, capsys, "sql", "SELECT * FROM range(10000000000000)", "-w", str(fence["ws"]))
    assert code == 0 and "showing the first 1,000 rows" in err  # a table: 1000 rows by default
    assert time.monotonic() - started < 30  # 10^13 rows were never built


def test_time_and_memory_are_bounded(fence, monkeypatch, capsys):
    started = time.monotonic()
    join = "SELECT count(*) FROM range(200000) a, range(200000) b WHERE a.range + b.range = -1"
    code, _, err = sql(monkeypatch, capsys, fence, join, Path("/"), "--timeout", "1")
    assert_one_line(code, err, "stopped after 1 s", "--timeout")
    assert time.monotonic() - started < 20
    code, _, err = sql(monkeypatch, capsys, fence, "SELECT list(range) FROM range(3000000000)", Path("/"),
                       "--memory-limit", "0.3")
    assert_one_line(code, err, "more memory than its limit", "--memory-limit")


@pytest.mark.parametrize("args,fragment", [(["--timeout", "nan"], "--timeout nan"), (["--timeout", "0"], "--timeout 0"),
                                           (["--timeout", "inf"], "--timeout inf"),
                                           (["--memory-limit", "0"], "--memory-limit 0"),
                                           (["--memory-limit", "nan"], "--memory-limit nan"),
                                           (["--limit", "-1"], "--limit -1")])
def test_bad_limits_are_refused(args, fragment, fence, monkeypatch, capsys):
    code, _, err = sql(monkeypatch, capsys, fence, "SELECT 1", Path("/"), *args)
    assert_one_line(code, err, fragment)


def test_ctrl_c_stops_a_long_query(fence):
    join = "SELECT count(*) FROM range(300000) a, range(300000) b WHERE a.range + b.range = -1"
    proc = subprocess.Popen([str(VENV_BIN / "tailstudy"), "sql", join, "-w", str(fence["ws"])], cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=terminal_sigint)
    time.sleep(4)  # imports, then well into the join
    assert proc.poll() is None
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.monotonic() - sent < 10, (proc.returncode, err, sigint_state())
    assert "Traceback" not in err and "interrupted" in err


def test_ctrl_c_inside_duckdbs_own_import_is_not_lost(fence):
    """DuckDB's Python client imports pandas lazily inside `con.values` (the read-only check) and swallows a
    KeyboardInterrupt raised in that import: a Ctrl-C landing there was lost and the query ran to its end. Here the
    import of pandas itself sends the SIGINT, in a fresh interpreter that has not imported pandas yet."""
    join = "SELECT count(*) FROM range(300000) a, range(300000) b WHERE a.range + b.range = -1"
    script = sigint_on_import("pandas") + textwrap.dedent(f"""
        from pathlib import Path
        from tailstudy import sqlguard
        from tailstudy.store import Workspace
        assert "pandas" not in sys.modules
        try:
            sqlguard.guarded_query(Workspace(Path({str(fence["ws"])!r})), {join!r}, sqlguard.Limits(seconds=40))
        except KeyboardInterrupt:
            print("interrupted", "pandas" in sys.modules)
    """)
    sent = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          preexec_fn=terminal_sigint)
    assert done.stdout.split() == ["interrupted", "True"], (done.stderr[-2000:], sigint_state())
    assert time.monotonic() - sent < 30


def test_ctrl_c_noted_sets_a_flag_and_restores_the_handler():
    from tailstudy import sqlguard

    # SIGINT as an interactive process has it (an earlier test in this process can leave it ignored or blocked)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        with sqlguard.ctrl_c_noted() as pressed:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs between bytecodes: no KeyboardInterrupt may escape here
            assert pressed.is_set()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        signal.signal(signal.SIGINT, outer)


def test_an_interrupt_that_lands_before_the_query_runs_still_stops_it():
    """DuckDB forgets an interrupt that arrives before a query starts executing; Ctrl-C can land there (the worker
    has bound the relation, not yet run it), and a forgotten one left `tailstudy sql` waiting for the whole query."""
    import threading

    import duckdb

    from tailstudy import sqlguard

    con = duckdb.connect()
    bound, done, ended = threading.Event(), threading.Event(), {}

    def worker():
        relation = con.sql("SELECT count(*) FROM range(300000) a, range(300000) b WHERE a.range + b.range = -1")
        bound.set()
        time.sleep(0.5)  # the window: Ctrl-C arrives here
        try:
            relation.fetchall()
            ended["how"] = "finished"
        except duckdb.InterruptException:
            ended["how"] = "interrupted"
        finally:
            done.set()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    bound.wait()
    sent = time.monotonic()
    sqlguard._stop(con, thread, done)
    assert ended.get("how") == "interrupted" and time.monotonic() - sent < 5


# ---------------------------------------------------------------- plain text stays plain

def test_cells_and_errors_print_as_stored(fence, monkeypatch, capsys):
    monkeypatch.chdir("/")
    text = "[/x] :cross_mark: [bold]b[/] root:x:0"
    code, out, err = run_main(monkeypatch, capsys, "sql", f"SELECT '{text}' AS \"c[/y]\"", "-w", str(fence["ws"]))
    assert code == 0 and text in out and "c[/y]" in out, err
    code, _, err = run_main(monkeypatch, capsys, "sql", 'SELECT * FROM "[bold]nope[/x]:cross_mark:"', "-w",
                            str(fence["ws"]))
    assert "[bold]nope[/x]:cross_mark:" in assert_one_line(code, err)


def test_the_console_script_prints_user_text_verbatim(fence, tmp_path):
    captions = tmp_path / "caps[x].csv"
    captions.write_text("caption\na photo of a tench\n")
    (tmp_path / "ws").mkdir()
    done = subprocess.run([str(VENV_BIN / "tailstudy"), "match", str(captions), "--vocab", "imagenet100", "-w",
                           str(tmp_path / "ws"), "--workers", "1"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "'caps[x]'" in done.stdout
    done = subprocess.run([str(VENV_BIN / "tailstudy"), "sql", "SELECT DISTINCT corpus FROM concept_freq", "-w",
                           str(tmp_path / "ws")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "caps[x]" in done.stdout, done.stderr
    done = subprocess.run([str(VENV_BIN / "tailstudy"), "sql", "SELECT 1 FROM \"[/x\"", "-w", str(tmp_path / "ws")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "[/x" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_python_variables_are_not_tables(fence, monkeypatch, capsys):
    secret_frame = __import__("pandas").DataFrame({"leaked": [SECRET]})  # noqa: F841 -- a replacement-scan target
    code, out, err = sql(monkeypatch, capsys, fence, "SELECT * FROM secret_frame", Path("/"))
    assert SECRET not in out
    assert_one_line(code, err, "SQL error")


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("the fence tests use Linux paths")


def test_an_ignored_sigint_stays_ignored_while_a_query_runs():
    from tailstudy import sqlguard

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with sqlguard.ctrl_c_noted() as pressed:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert not pressed.is_set()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
