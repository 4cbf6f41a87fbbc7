"""How the CLI prints a table (`--format table|csv|json`) and the choices its options accept (validated by the CLI)."""
from __future__ import annotations

import math
import sys
from enum import Enum


class TableFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class ExportFormat(str, Enum):
    webdataset = "webdataset"
    csv = "csv"


def cell(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return "" if value is None else str(value)


def print_frame(df, fmt: TableFormat | str, console, title: str | None = None) -> None:
    """A DataFrame as a rich table (to the console), CSV or JSON records (to stdout, nothing else printed)."""
    fmt = TableFormat(fmt)
    if fmt is TableFormat.csv:
        sys.stdout.write(df.to_csv(index=False))
    elif fmt is TableFormat.json:
        sys.stdout.write(df.to_json(orient="records", indent=None) + "\n")
    else:
        from rich.table import Table

        table = Table(title=title, show_edge=True)
        for col in df.columns:
            table.add_column(str(col))
        for row in df.itertuples(index=False):
            table.add_row(*(cell(v) for v in row))
        console.print(table)
