"""Read-only SQL over a workspace's catalog, by construction (what `tailstudy sql` runs).

The fence is what DuckDB itself enforces, not a reading of the query text:
1. files: ``enable_external_access = false`` with ``allowed_directories`` = the workspace's absolute, resolved path
   (DuckDB adds the catalog's own files and its private spill directory). DuckDB resolves every path it opens
   (symlinks and ``..`` included) before it compares, so nothing outside the workspace is reached, whatever the
   statement or table function; relative paths resolve against the workspace (the views' paths are relative),
   because the query runs with the workspace as the current directory. The caller's directory is never in the list
   (DuckDB would turn ``""`` into the directory current when it is set).
2. the catalog is opened read-only; extensions are never installed or loaded; replacement scans of Python variables
   are off; and the configuration is locked, so a query cannot widen any of this.
3. resources: DuckDB's ``memory_limit`` and ``threads``, spilling only into a private temporary directory (never the
   workspace) of bounded size, and a wall-time limit: the query runs in a worker thread that `interrupt()` stops when
   the time is up or on Ctrl-C. A row limit is applied inside the query plan, so a huge result is never built.
4. one statement per connection, a read: DuckDB's own parse must give exactly one SELECT (DESCRIBE, SHOW, SUMMARIZE,
   PIVOT, VALUES, FROM-first and info PRAGMAs parse as SELECT). COPY, EXPORT, EXPLAIN (EXPLAIN ANALYZE runs what it
   wraps), CALL, SET, PRAGMA, ATTACH, INSTALL/LOAD, CHECKPOINT, VACUUM and DDL/DML are refused, and so are the table
   functions that change the session or the database (enable_profiling, enable_logging, checkpoint, query, ...):
   those act on later statements, and no later statement runs on the connection (it is closed after this one). A
   PIVOT without an IN list is two statements in DuckDB: only the shipped @queries may use one.
A file inside the workspace can still be read (that is the point); none is written: COPY/EXPORT are refused, the
catalog is read-only and DuckDB's temporary files go elsewhere.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from tailstudy.env import available_memory, usable_cores
from tailstudy.errors import InputError
from tailstudy.paths import SQL_DIR
from tailstudy.store import Workspace

DEFAULT_ROW_LIMIT = 1000  # table output
DEFAULT_SECONDS = 600.0
CTRL_C_POLL = 0.1  # seconds between the waiting thread's looks at Ctrl-C and the deadline
MIN_MEMORY = 256 << 20
# table functions that act on the session or the database rather than read: refused by name (DuckDB's parse)
SESSION_FUNCTIONS = frozenset({
    "enable_profiling", "disable_profiling", "enable_logging", "disable_logging", "truncate_duckdb_logs",
    "checkpoint", "force_checkpoint", "query", "query_table", "json_execute_serialized_sql", "read_duckdb"})
READS = ("SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, PIVOT")
QUERIES_DIR = SQL_DIR / "queries"


def named_queries() -> list[str]:
    return sorted(p.stem for p in QUERIES_DIR.glob("*.sql"))


def resolve_query(text: str) -> str:
    """`@name` -> the documented query sql/queries/name.sql; anything else is SQL as given. Only a shipped query's
    bare name is looked up (no path, no `..`): never any other .sql file."""
    if not text.startswith("@"):
        return text
    name, known = text[1:].strip().removesuffix(".sql"), named_queries()
    if name not in known:
        raise InputError(f"{text}: no such documented query (known: {', '.join(known)})")
    return (QUERIES_DIR / f"{name}.sql").read_text(encoding="utf-8")


def use_workspace(con: duckdb.DuckDBPyConnection, ws: Workspace) -> duckdb.DuckDBPyConnection:
    """Resolve the views' relative paths against the workspace, wherever it now lies (DuckDB's file_search_path)."""
    quoted = ws.root.as_posix().replace("'", "''")
    con.execute(f"SET file_search_path = '{quoted}'")
    return con


@dataclass(frozen=True)
class Limits:
    """What one query may use: rows fetched (None: all), wall seconds, memory bytes (None: half of what is free now,
    at least 256 MiB), threads (None: the cores this process may use)."""

    rows: int | None = None
    seconds: float = DEFAULT_SECONDS
    memory: int | None = None
    threads: int | None = None


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def allowed_directories(ws: Workspace) -> list[str]:
    """The workspace only, absolute and resolved (DuckDB compares resolved paths). The shipped reference tables are
    copied into the catalog when it is built, so the package's data folder is not needed (nor writable) here."""
    return [Path(ws.root).resolve().as_posix().rstrip("/") + "/"]


def default_memory() -> int:
    return max(MIN_MEMORY, min(available_memory(), 1 << 50) // 2)


def _functions(node, found: set[str]) -> set[str]:
    """Every function name in DuckDB's serialised parse tree (scalar, aggregate and table functions)."""
    if isinstance(node, dict):
        name = node.get("function_name")
        if isinstance(name, str):
            found.add(name.lower())
        for value in node.values():
            _functions(value, found)
    elif isinstance(node, list):
        for value in node:
            _functions(value, found)
    return found


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str, shipped: bool = False) -> None:
    """Exactly one read statement, by DuckDB's own parse (never by string matching); no session-changing function.
    `con` is the fenced connection: DuckDB expands some statements while parsing (IMPORT DATABASE reads the files it
    names), and those reads must be fenced too. Nothing is executed but the serialisation of the parse tree.
    A PIVOT without an IN list is two statements (an enum type of the pivoted values, then the query), whose text
    DuckDB does not give back to be checked, and the second would run after whatever the first's source did to the
    session: only the shipped @queries (`shipped`) may use one."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as err:
        raise InputError(f"SQL error: {first_line(err)}") from None
    if not statements:
        raise InputError("SQL: empty query")
    # DuckDB's PIVOT rewrite adds a CREATE (a temporary enum type) of its own: no text, never written by a user
    user = [s for s in statements if not (s.type.name == "CREATE" and not s.query.strip())]
    if len(user) < len(statements) and not shipped:
        raise InputError("SQL: PIVOT needs an IN list here (PIVOT ... ON col IN (v1, v2, ...)): without one DuckDB "
                         "runs two statements, and `tailstudy sql` runs one")
    for statement in user:
        kind = statement.type.name
        if kind != "SELECT":
            kind = kind if kind.replace("_", "").isalpha() else "this kind of"  # UPDATE EXTENSIONS: '???'
            why = " (EXPLAIN ANALYZE runs the statement it wraps)" if kind == "EXPLAIN" else ""
            raise InputError(f"SQL: {kind} statements are not allowed{why}: `tailstudy sql` only reads the "
                             f"catalog ({READS})")
    if len(user) != 1:
        raise InputError(f"SQL: {len(user)} statements: give one query")
    text = user[0].query
    if not text.strip():  # a dynamic PIVOT: not serialisable; the fence in DuckDB still holds
        return
    values = con.values([text])  # DuckDB's serialised parse tree of the statement (nothing runs)
    tree = values.select(duckdb.FunctionExpression("json_serialize_sql", duckdb.ColumnExpression(values.columns[0])))
    tree = tree.fetchone()[0]
    refused = sorted(_functions(json.loads(tree), set()) & SESSION_FUNCTIONS)
    if refused:
        raise InputError(f"SQL: {refused[0]}() is not allowed: `tailstudy sql` only reads the catalog")


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect_guarded(ws: Workspace, limits: Limits = Limits(), temp_dir: str | None = None) -> duckdb.DuckDBPyConnection:
    """The catalog, read-only, fenced to the workspace, bounded in memory and threads, its configuration locked."""
    path = ws.catalog_path
    if not path.is_file():
        raise InputError(f"{path}: no catalog yet (run a study, or `tailstudy catalog` to build it)")
    memory = limits.memory or default_memory()
    config = {"autoinstall_known_extensions": "false", "autoload_known_extensions": "false",
              "allow_community_extensions": "false", "threads": str(limits.threads or usable_cores()),
              "memory_limit": f"{memory}B", "temp_directory": temp_dir or "",
              "max_temp_directory_size": f"{memory}B"}
    try:
        con = duckdb.connect(str(path), read_only=True, config=config)
    except duckdb.Error as err:
        raise InputError(f"{path}: cannot open the catalog: {first_line(err)}") from None
    # allowed_directories can only be set while external access is on; then access is switched off and locked
    con.execute(f"SET allowed_directories = [{', '.join(_quoted(d) for d in allowed_directories(ws))}]")
    use_workspace(con, ws)  # the views' relative paths resolve against the workspace
    con.execute("SET python_enable_replacements = false")  # no scans of this process's Python variables
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def _run(con: duckdb.DuckDBPyConnection, sql: str, rows: int | None, box: dict, done: threading.Event) -> None:
    try:
        relation = con.sql(sql)  # a SELECT: a relation, so the row limit is part of the plan (LIMIT rows)
        box["df"] = (relation.limit(rows) if rows is not None else relation).df()
    except BaseException as err:  # noqa: BLE001 -- handed to the waiting thread
        box["error"] = err
    finally:
        done.set()


def _stop(con: duckdb.DuckDBPyConnection, worker: threading.Thread, done: threading.Event,
          within: float = 10.0) -> None:
    """Interrupt DuckDB until the worker's query ends (at most `within` seconds). Again and again, because DuckDB
    clears the flag when a query starts executing: an interrupt that lands before (while the worker is still binding
    the relation) is lost, and a lost one left the query running, so closing the connection then waited for all of
    it. `done`, not the thread's liveness: a Ctrl-C inside `start()` can come before the thread counts as alive."""
    deadline = time.monotonic() + within
    while not done.is_set() and time.monotonic() < deadline:
        con.interrupt()
        done.wait(0.2)
    if worker.is_alive():
        worker.join(max(0.0, deadline - time.monotonic()))


@contextmanager
def ctrl_c_noted():
    """-> an Event that Ctrl-C (SIGINT) sets while the block runs, instead of raising KeyboardInterrupt; the previous
    handler is back afterwards. Why: DuckDB's Python client swallows a KeyboardInterrupt raised inside its own calls
    (one that landed in the `import pandas` that `con.values` does lazily was lost, and the query then ran to its
    end), so the signal only sets a flag, which the waiting loop acts on. Outside the main thread (no signals there):
    an Event nobody sets; likewise where SIGINT is ignored (a background job: Ctrl-C is not for it)."""
    pressed = threading.Event()
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield pressed
        return
    previous = signal.signal(signal.SIGINT, lambda *_: pressed.set())
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _execute(con: duckdb.DuckDBPyConnection, sql: str, rows: int | None, seconds: float,
             pressed: threading.Event):
    """Run in a worker thread, and interrupt DuckDB when the time is up or `pressed` (Ctrl-C, `ctrl_c_noted`) is set;
    the main thread polls both."""
    box: dict = {}
    # The join after the loop lets the worker release DuckDB's objects before the connection closes: a process that
    # exits with DuckDB still working in a thread aborts ("terminate called ...").
    done = threading.Event()
    worker = threading.Thread(target=_run, args=(con, sql, rows, box, done), daemon=True, name="tailstudy-sql")
    worker.start()
    deadline = time.monotonic() + seconds
    while not done.wait(CTRL_C_POLL):
        if pressed.is_set() or time.monotonic() >= deadline:
            _stop(con, worker, done)
            if pressed.is_set():
                raise KeyboardInterrupt
            raise InputError(f"SQL: stopped after {seconds:g} s (--timeout SECONDS to allow more)")
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["df"]


def guarded_query(ws: Workspace, sql: str, limits: Limits = Limits()):
    """Run one read-only query on the catalog -> pandas DataFrame (at most `limits.rows` rows); every refusal or SQL
    error is one InputError."""
    shipped = sql.startswith("@")
    sql = resolve_query(sql)
    temp_dir = tempfile.mkdtemp(prefix="tailstudy-sql-")  # DuckDB's spill files: never in the workspace
    previous = os.getcwd()
    try:
        with ctrl_c_noted() as pressed:
            df = _guarded(ws, sql, shipped, limits, temp_dir, pressed)
    finally:
        os.chdir(previous)
        shutil.rmtree(temp_dir, ignore_errors=True)
    if pressed.is_set():  # Ctrl-C while the connection opened, the check ran or the query ended
        raise KeyboardInterrupt
    return df


def _guarded(ws: Workspace, sql: str, shipped: bool, limits: Limits, temp_dir: str, pressed: threading.Event):
    con = connect_guarded(ws, limits, temp_dir)
    try:
        os.chdir(ws.root)  # relative paths resolve (and are checked) against the workspace, not the caller's cwd
        check_read_only(con, sql, shipped)
        if pressed.is_set():
            raise KeyboardInterrupt
        return _execute(con, sql, limits.rows, limits.seconds, pressed)
    except duckdb.PermissionException as err:
        raise InputError(f"SQL: not allowed: {first_line(err)} (`tailstudy sql` reads only the workspace "
                         f"{ws.root})") from None
    except duckdb.InterruptException:
        raise InputError(f"SQL: stopped after {limits.seconds:g} s (--timeout SECONDS to allow more)") from None
    except duckdb.OutOfMemoryException as err:
        raise InputError(f"SQL: the query needs more memory than its limit ({first_line(err)}); --memory-limit "
                         "GB to allow more") from None
    except duckdb.Error as err:
        raise InputError(f"SQL error: {first_line(err)}") from None
    finally:
        con.close()


def limit_note(df, rows: int | None):
    """A result fetched with `rows` + 1 as its limit -> (at most `rows` rows, a note when there were more)."""
    if rows is None or len(df) <= rows:
        return df, None
    return df.head(rows), (f"showing the first {rows:,} rows; there are more (--limit N for more, --limit 0 for "
                           "all)")
