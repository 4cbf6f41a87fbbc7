"""What the three command-line apps (cli_study, cli_data, cli_server) share: the consoles, one-line errors, the
workspace rule and the common options."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text

from tailstudy.output import TableFormat, print_frame
from tailstudy.store import Workspace, workspace_path

# no markup or emoji codes: cells, paths and messages carry user data ("[/x]", ":cross_mark:"), printed as stored
out = Console(width=None if sys.stdout.isatty() else 160, markup=False, emoji=False)
err = Console(stderr=True, markup=False, emoji=False)

if hasattr(getattr(typer.core, "TyperOption", None), "display_type_rich"):
    # typer 0.29's rich help prints every option's value type, flags included ("--verbose <bool>", "--help <bool>"),
    # though a flag takes no value: its help panel asks display_type_rich, which gives none for a flag here
    _display_type = typer.core.TyperOption.display_type_rich
    typer.core.TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _display_type(self, ctx)

WorkspaceOpt = typer.Option(None, "--workspace", "-w",
                            help="Workspace directory (default: $TAILSTUDY_WORKSPACE or ./workspace).")
FormatOpt = typer.Option(TableFormat.table, "--format", "-f", help="How tables print: table, csv or json (stdout).")


def error_text(message: str) -> Text:
    return Text.assemble(("error:", "bold red"), " ", message)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, then exit `code` (2: the input is wrong; 1: the work failed)."""
    err.print(error_text(message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def say(message: str) -> None:
    err.print(message, highlight=False, soft_wrap=True)


def open_workspace(path: Optional[Path], create: bool = False) -> Workspace:
    """-w, else $TAILSTUDY_WORKSPACE, else ./workspace. The rule: a workspace must exist; only the default ./workspace
    may be created, and only by the commands that build artifacts (`create`: run, match, ingest). A workspace named
    by -w or $TAILSTUDY_WORKSPACE is never created (a typo must not become a new, empty workspace), and read-only
    commands (status, verify, catalog, sql, export, count) create nothing."""
    root = workspace_path(path)
    where = "-w" if path else "$TAILSTUDY_WORKSPACE" if os.environ.get("TAILSTUDY_WORKSPACE") else None
    if root.exists() and not root.is_dir():
        fail(f"{root.resolve()}: the workspace path is a file, not a directory")
    if not root.exists() and not (create and where is None):
        if where is None:
            fail(f"workspace {root.resolve()} does not exist: run a study or `tailstudy match` first, or give -w")
        hint = "leave -w out" if where == "-w" else "unset TAILSTUDY_WORKSPACE"
        fail(f"workspace {root.resolve()} ({where}) does not exist"
             + (f": create it first, or {hint} to use ./workspace" if create else ""))
    return Workspace(root)


def print_rows(rows: list[dict], columns: list[str], fmt: TableFormat, title: str | None = None) -> None:
    """Rows as a table, CSV or JSON (tailstudy.output.print_frame)."""
    # pandas, at the moment a table is printed: its ~0.6 s import is paid by `status` and `run`, never by `match` or
    # `count` (tests/test_match_stage.py: test_match_and_count_never_import_pandas)
    import pandas as pd

    print_frame(pd.DataFrame(rows, columns=columns), fmt, out, title=title)
