"""Read-only SQL over a workspace's catalog, by construction (what `tailstudy sql` runs).

Three independent fences, so a mistake in one is caught by another:
1. only read statements are executed (SELECT / WITH / FROM / DESCRIBE / SHOW / SUMMARIZE / EXPLAIN / CALL), checked on
   DuckDB's own parse of the query, so COPY ... TO, EXPORT, INSTALL/LOAD, ATTACH, SET and DDL/DML never run;
2. the catalog is opened read-only (CREATE/INSERT/UPDATE/DELETE/DROP fail in DuckDB itself);
3. file access is limited to the workspace and the shipped data directory (``allowed_directories`` with
   ``enable_external_access = false``), extensions are never auto-installed or auto-loaded, and the configuration is
   locked, so a query cannot widen any of this with SET.
"""
from __future__ import annotations

from pathlib import Path

import duckdb

from pipeline.errors import InputError
from pipeline.store import Workspace

READ_STATEMENTS = {"SELECT", "EXPLAIN", "CALL"}
DEFAULT_ROW_LIMIT = 1000


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def allowed_directories(ws: Workspace) -> list[str]:
    """The workspace (artifacts, relative view paths) and the shipped data the views read (reference tables)."""
    from pipeline.paths import DATA_DIR

    return [ws.root.as_posix() + "/", Path(DATA_DIR).resolve().as_posix() + "/"]


def check_read_only(sql: str) -> None:
    """Reject an empty query and any statement that is not a read, by DuckDB's parse (never by string matching)."""
    try:
        statements = duckdb.connect(":memory:").extract_statements(sql)
    except duckdb.Error as err:
        raise InputError(f"SQL error: {first_line(err)}") from None
    if not statements:
        raise InputError("SQL: empty query")
    for statement in statements:
        kind = statement.type.name
        if kind not in READ_STATEMENTS:
            raise InputError(f"SQL: {kind} statements are not allowed: `tailstudy sql` only reads the catalog "
                             "(SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)")


def connect_guarded(ws: Workspace) -> duckdb.DuckDBPyConnection:
    """The catalog, read-only, with file access fenced to the workspace and the configuration locked."""
    path = ws.catalog_path
    if not path.is_file():
        raise InputError(f"{path}: no catalog yet (run a study, or `tailstudy catalog` to build it)")
    try:
        con = duckdb.connect(str(path), read_only=True,
                             config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"})
    except duckdb.Error as err:
        raise InputError(f"{path}: cannot open the catalog: {first_line(err)}") from None
    # allowed_directories can only be set while external access is on; then access is switched off and locked
    dirs = ", ".join("'" + d.replace("'", "''") + "'" for d in allowed_directories(ws))
    con.execute(f"SET allowed_directories = [{dirs}]")
    con.execute(f"SET file_search_path = '{ws.root.as_posix()}'")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def guarded_query(ws: Workspace, sql: str):
    """Run one read-only query on the catalog -> pandas DataFrame; every refusal or SQL error is one InputError."""
    from pipeline.catalog import resolve_query

    sql = resolve_query(sql)
    check_read_only(sql)
    con = connect_guarded(ws)
    try:
        return con.execute(sql).df()
    except duckdb.PermissionException as err:
        raise InputError(f"SQL: not allowed: {first_line(err)} (`tailstudy sql` reads only the workspace)") from None
    except duckdb.Error as err:
        raise InputError(f"SQL error: {first_line(err)}") from None
    finally:
        con.close()


def limit_rows(df, limit: int | None):
    """Table output shows at most `limit` rows -> (rows shown, note or None); CSV/JSON are never limited."""
    if limit is None or limit <= 0 or len(df) <= limit:
        return df, None
    return df.head(limit), (f"showing {limit:,} of {len(df):,} rows (--limit N, --limit 0 for all, or "
                            "--format csv/json, which are never limited)")
