"""The DuckDB catalog: views (defined in sql/) over a workspace's Parquet artifacts."""
from __future__ import annotations

import re
from pathlib import Path

import duckdb

from pipeline.errors import InputError
from pipeline.paths import DATA_DIR, SQL_DIR
from pipeline.store import Workspace

QUERIES_DIR = SQL_DIR / "queries"


def named_queries() -> list[str]:
    return sorted(p.stem for p in QUERIES_DIR.glob("*.sql"))


def resolve_query(text: str) -> str:
    """`@name` -> the documented query sql/queries/name.sql; anything else is SQL as given."""
    if not text.startswith("@"):
        return text
    path = QUERIES_DIR / f"{text[1:].removesuffix('.sql')}.sql"
    if not path.is_file():
        raise InputError(f"{text}: no such documented query (known: {', '.join(named_queries())})")
    return path.read_text()


def sql_statements(path: Path, **params: str) -> list[str]:
    """Statements of a .sql file with ${NAME} placeholders filled in (paths are quoted for SQL string literals)."""
    text = path.read_text()
    for name, value in params.items():
        text = text.replace("${" + name + "}", value.replace("'", "''"))
    body = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip()]


def refresh(ws: Workspace) -> list[str]:
    """(Re)create every view; returns the views that have data behind them."""
    ws.root.mkdir(parents=True, exist_ok=True)
    live = []
    with duckdb.connect(str(ws.catalog_path)) as con:
        for statement in sql_statements(SQL_DIR / "schema.sql"):
            con.execute(statement)
        for statement in sql_statements(SQL_DIR / "views.sql", WORKSPACE=ws.root.as_posix(), DATA=DATA_DIR.as_posix()):
            name = re.search(r"VIEW\s+(\w+)", statement).group(1)
            try:
                con.execute(statement)
                live.append(name)
            except (duckdb.IOException, duckdb.BinderException, duckdb.InvalidInputException) as err:
                unreadable = not isinstance(err, duckdb.BinderException) and "No files found" not in str(err)
                if unreadable:  # a corrupt or unreadable file: never an empty view in silence
                    raise InputError(f"catalog view {name}: {str(err).strip().splitlines()[0]}") from None
                # no artifacts of this kind yet (no files, or not the fields a view needs): the empty view stays
    return live


def query(ws: Workspace, sql: str):
    """Run a read-only query on the catalog -> pandas DataFrame (the guarded connection of pipeline.sqlguard)."""
    from pipeline.sqlguard import guarded_query

    return guarded_query(ws, sql)
