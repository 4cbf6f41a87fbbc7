"""How the CLI prints a table (`--format table|csv|json`) and the choices its options accept (validated by the CLI)."""
from __future__ import annotations

import math
import numbers
import sys
from enum import Enum

from rich.table import Table
from rich.text import Text


class TableFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class ExportFormat(str, Enum):
    webdataset = "webdataset"
    csv = "csv"


MISSING = "–"  # a NULL / NaN cell (README: "undefined (–)")


def cell(value, integral: bool = False) -> str:
    """One table cell: floats (numpy's too) to 3 decimals, or as integers in an `integral` column (DuckDB's integer
    sums are HUGEINT, which reaches pandas as float64); None, NaN, pandas' NA and NaT as "–"."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        if math.isnan(value):
            return MISSING
        return str(int(value)) if integral and float(value).is_integer() else f"{value:.3f}"
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return MISSING
    return str(value)


def integral_columns(df) -> list[bool]:
    """Per column (by position): a float column whose values are all whole numbers, i.e. an integer sum."""
    found = []
    for i in range(df.shape[1]):
        values = df.iloc[:, i].dropna()
        found.append(values.dtype.kind == "f" and len(values) > 0 and bool(((values % 1) == 0).all())
                     and bool((values.abs() < 2**53).all()))
    return found


def print_frame(df, fmt: TableFormat | str, console, title: str | None = None) -> None:
    """A DataFrame as a rich table (to the console), CSV or JSON records (to stdout, nothing else printed)."""
    fmt = TableFormat(fmt)
    if fmt is TableFormat.csv:
        sys.stdout.write(df.to_csv(index=False))
    elif fmt is TableFormat.json:
        sys.stdout.write(df.to_json(orient="records", indent=None) + "\n")
    else:
        # Text, never a str: rich reads a str as markup and emoji codes ("[/x]", ":cross_mark:" are data here)
        table = Table(title=None if title is None else Text(title), show_edge=True)
        for col in df.columns:
            table.add_column(Text(str(col)))
        whole = integral_columns(df)
        for row in df.itertuples(index=False):
            table.add_row(*(Text(cell(v, w)) for v, w in zip(row, whole)))
        console.print(table)
