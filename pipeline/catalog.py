"""The DuckDB catalog: views (defined in sql/) over a workspace's Parquet artifacts."""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import duckdb

from tailstudy.errors import InputError
from tailstudy.locks import stderr_say
from tailstudy.paths import DATA_DIR, SQL_DIR
from tailstudy.sqlguard import guarded_query, named_queries, use_workspace  # noqa: F401 (named_queries: read here too)
from tailstudy.store import Workspace, disk_full_error, writer_tag


def sql_statements(path: Path, **params: str) -> list[str]:
    """Statements of a .sql file with ${NAME} placeholders filled in (paths are quoted for SQL string literals)."""
    text = path.read_text()
    for name, value in params.items():
        text = text.replace("${" + name + "}", value.replace("'", "''"))
    body = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip()]


def _statement_name(statement: str) -> str:
    return re.search(r"(?:VIEW|TABLE)\s+(\w+)", statement).group(1)


def _build(path: Path, ws: Workspace) -> list[str]:
    """Create every view in a new catalog file; returns the views that have data behind them."""
    live = []
    with duckdb.connect(str(path)) as con:
        use_workspace(con, ws)
        for statement in sql_statements(SQL_DIR / "schema.sql"):
            con.execute(statement)
        for statement in sql_statements(SQL_DIR / "views.sql", DATA=DATA_DIR.as_posix()):
            if statement.upper().startswith("CREATE OR REPLACE MACRO"):  # helpers of the views, no data behind them
                con.execute(statement)
                continue
            try:
                con.execute(statement)
                live.append(_statement_name(statement))
            except (duckdb.IOException, duckdb.BinderException, duckdb.InvalidInputException) as err:
                unreadable = not isinstance(err, duckdb.BinderException) and "No files found" not in str(err)
                if unreadable:  # a corrupt or unreadable file: never an empty view in silence
                    raise InputError(f"catalog view {_statement_name(statement)}: "
                                     f"{str(err).strip().splitlines()[0]}") from None
                # no artifacts of this kind yet (no files, or not the fields a view needs): the empty view stays
    return live


def refresh(ws: Workspace) -> list[str]:
    """(Re)build the catalog into a new file and rename it into place.

    Never blocks: a reader (read-only or read-write, in this process or another) keeps the old file's snapshot, and
    the rename needs no lock on it. View paths are relative to the workspace (see `use_workspace`)."""
    ws.root.mkdir(parents=True, exist_ok=True)
    ws.drop_corrupt_records(stderr_say)
    tmp = ws.root / f".catalog-{writer_tag()}-{uuid.uuid4().hex[:8]}.duckdb"  # a killed builder's: cleaned later
    try:
        live = _build(tmp, ws)
        os.replace(tmp, ws.catalog_path)
    except Exception as err:
        if "No space left on device" in str(err) or getattr(err, "errno", None) == 28:
            raise disk_full_error(tmp) from None
        raise
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return live


def query(ws: Workspace, sql: str):
    """Run a read-only query on the catalog -> pandas DataFrame (the guarded connection of tailstudy.sqlguard)."""
    return guarded_query(ws, sql)


def check_corpus_name(ws: Workspace, labels: dict[str, str], frequency_key: str) -> None:
    """`tailstudy match` refuses the labels (corpus, vocab, method) that another frequency artifact already carries
    (e.g. x.parquet, then x.csv): two artifacts labelled alike would be summed together by any query that groups by
    those columns. Another method or vocabulary on the same corpus name is told apart by its column."""
    for path in sorted((ws.root / "frequency").glob("*/manifest.json")):
        manifest = json.loads(path.read_text())
        if path.parent.name != frequency_key and all(manifest.get(k) == v for k, v in labels.items()):
            match_key = manifest.get("inputs", {}).get("match", "?")
            raise InputError(f"corpus name {labels['corpus']!r} ({labels['vocab']}, {labels['method']}) is taken by "
                             f"frequency artifact {path.parent} (match {match_key}: other input content, format or "
                             f"options): give --name to keep both, or remove it")
