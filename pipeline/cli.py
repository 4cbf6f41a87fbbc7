"""`tailstudy` command line. User errors print one line and exit 2; nothing here prints a traceback unless
TAILSTUDY_DEBUG=1."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from pipeline.errors import TailstudyError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Controlled studies of long-tailed image-text data: match, count, curate, train, evaluate.")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

DEFAULT_WORKSPACE = "workspace"
WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace directory (default: $TAILSTUDY_WORKSPACE or ./workspace).")


def _workspace(path: Optional[Path]):
    from pipeline.store import Workspace

    return Workspace(path or os.environ.get("TAILSTUDY_WORKSPACE", DEFAULT_WORKSPACE))


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    return "" if value is None else str(value)


RESULT_COLUMNS = ["factor", "level", "model", "seed", "top1", "top5", "rho_acc", "rho_pred", "head_acc", "tail_acc"]


def print_results(results: list[dict]) -> None:
    table = Table(title="Results (ρ = Spearman with training frequency; lower = less biased)")
    for col in RESULT_COLUMNS:
        table.add_column(col, justify="right" if col not in ("factor", "level", "model") else "left")
    for row in results:
        table.add_row(*(_fmt(row.get(c)) for c in RESULT_COLUMNS))
    out.print(table)


@app.command()
def run(
    spec: Optional[Path] = typer.Argument(None, help="Study spec YAML (default: the embedded default study)."),
    workspace: Optional[Path] = WorkspaceOpt,
    force: List[str] = typer.Option([], "--force", help="Re-run this stage even if cached (repeatable; 'all')."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's own logs."),
) -> None:
    """Run a study end to end; stages whose inputs did not change are reused."""
    from pipeline.spec import default_spec_path, load_spec
    from pipeline.stages import STAGES, plan_study

    spec_path = spec or default_spec_path()
    bad = [f for f in force if f not in (*STAGES, "all")]
    if bad:
        _fail(f"--force {bad[0]}: unknown stage (stages: {', '.join(STAGES)}, all)")
    plan_study(load_spec(spec_path))  # validate spec and vocabulary before any orchestration starts
    ws = _workspace(workspace)
    from flows.runner import run_study

    summary = run_study(str(spec_path), str(ws.root), list(force), verbose=verbose)
    for rec in summary["stages"]:
        colour = {"ran": "green", "reused": "cyan", "shared": "dim"}.get(rec["status"], "white")
        out.print(f"  [{colour}]{rec['status']:<7}[/] {rec['stage']:<10} {rec['key']}  {rec['label']}", highlight=False)
    counts = {s: sum(1 for r in summary["stages"] if r["status"] == s) for s in ("ran", "reused", "shared")}
    out.print(f"stages: {counts['ran']} ran, {counts['reused']} reused, {counts['shared']} shared within this run")
    print_results(summary["results"])
    out.print(f"report: {summary['report']}", highlight=False)


@app.command()
def sql(
    query: str = typer.Argument(..., help="SQL over the catalog views (captions, concepts, concept_freq, run_metrics, "
                                          "...), or @NAME for a documented query of sql/queries/."),
    workspace: Optional[Path] = WorkspaceOpt,
    fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json"),
) -> None:
    """Query the workspace's DuckDB catalog (read-only)."""
    from pipeline import catalog

    if fmt not in ("table", "csv", "json"):
        _fail(f"--format {fmt}: use table, csv or json")
    df = catalog.query(_workspace(workspace), query)
    if fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif fmt == "json":
        sys.stdout.write(df.to_json(orient="records", indent=None) + "\n")
    else:
        table = Table(show_edge=True)
        for col in df.columns:
            table.add_column(str(col))
        for row in df.itertuples(index=False):
            table.add_row(*(_fmt(v) for v in row))
        out.print(table)


@app.command()
def status(workspace: Optional[Path] = WorkspaceOpt) -> None:
    """List the artifacts of a workspace."""
    ws = _workspace(workspace)
    arts = ws.list_artifacts()
    if not arts:
        out.print(f"{ws.root}: no artifacts yet")
        return
    table = Table(title=str(ws.root))
    for col in ("stage", "key", "rows", "seconds"):
        table.add_column(col)
    for art in arts:
        manifest = art.manifest()
        rows = ", ".join(f"{k}={v}" for k, v in manifest.get("rows", {}).items())
        table.add_row(art.stage, art.key, rows, _fmt(float(manifest.get("seconds", float("nan")))))
    out.print(table)


@app.command(name="catalog")
def catalog_cmd(workspace: Optional[Path] = WorkspaceOpt) -> None:
    """(Re)build the DuckDB catalog's views over the workspace's artifacts."""
    from pipeline import catalog

    ws = _workspace(workspace)
    live = catalog.refresh(ws)
    out.print(f"{ws.catalog_path}: views with data: {', '.join(live) or 'none'}")


def main() -> None:
    try:
        app(standalone_mode=True)
    except TailstudyError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: finished artifacts are kept; run again to resume")
        sys.exit(130)
    except Exception as exc:  # a bug, not a user error: one line unless debugging
        if os.environ.get("TAILSTUDY_DEBUG"):
            raise
        err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc} (set TAILSTUDY_DEBUG=1 for the traceback)",
                  highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
