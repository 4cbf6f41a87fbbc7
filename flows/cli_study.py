"""`tailstudy run`: a study end to end, on Prefect's ephemeral server in this process."""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

from tailstudy.flows.cli_common import WorkspaceOpt, err, fail, open_workspace, out, print_rows
from tailstudy.lifeline import shadowed_stdlib, start_watchdog
from tailstudy.output import TableFormat
from tailstudy.output import cell as _fmt
from tailstudy.preflight import check_run
from tailstudy.spec import default_spec_path, load_spec
from tailstudy.stages import check_force, plan_study

PANEL = "Study"
app = typer.Typer()

RESULT_COLUMNS = ["factor", "level", "learner", "seed", "top1", "top5", "rho_acc", "rho_pred", "head_acc", "tail_acc"]


def print_results(results: list[dict]) -> None:
    table = Table(title="Results (ρ = Spearman with training frequency; lower = less biased)")
    for col in RESULT_COLUMNS:
        table.add_column(col, justify="right" if col not in ("factor", "level", "learner") else "left")
    for row in results:
        table.add_row(*(_fmt(row.get(c)) for c in RESULT_COLUMNS))
    out.print(table)


@app.command(rich_help_panel=PANEL)
def run(
    spec: Optional[Path] = typer.Argument(None, help="Study spec YAML (default: the embedded default study)."),
    workspace: Optional[Path] = WorkspaceOpt,
    force: List[str] = typer.Option([], "--force", metavar="<stage>",
                                    help="Re-run this stage even if cached (repeatable; 'all')."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's own logs."),
    task_runner: Optional[str] = typer.Option(None, "--task-runner", metavar="<runner>",
                                              help="Runs the per-shard data tasks: local, threads:N, processes:N, "
                                                   "dask:N or tcp://HOST:PORT (a Dask scheduler)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, metavar="<n>",
                             help="CPU-bound stage nodes (curate, evaluate, ...) that may run at once; training runs "
                                  "overlap per train.parallel."),
    lock_timeout: Optional[float] = typer.Option(None, "--lock-timeout", metavar="<seconds>",
                                                 help="When another run holds the workspace: wait at most this many "
                                                      "seconds (default: until it ends; 0: fail at once)."),
    fmt: TableFormat = typer.Option(TableFormat.table, "--format", "-f", help="Results as table, csv or json "
                                                                              "(stdout; stage lines go to stderr)."),
) -> None:
    """Run a study end to end; stages whose inputs did not change are reused."""
    if lock_timeout is not None and not (math.isfinite(lock_timeout) and lock_timeout >= 0):
        fail(f"--lock-timeout {lock_timeout}: must be a number of seconds, 0 or more")
    spec_path = spec or default_spec_path()
    check_force(force)
    study = load_spec(spec_path)  # parsed once in this process: the flow gets this object, not the path to parse
    plan_study(study)  # validate spec and vocabulary before any orchestration starts
    ws = open_workspace(workspace, create=True)
    check_run(study, ws.root, str(spec_path))  # workspace, device, arch: before the first stage, not after corpus/match/curate
    for problem in shadowed_stdlib()[:1]:  # Prefect's server would fail to import, and we would wait out its timeout
        fail(problem)
    # Prefect and torch, imported by `run` alone: together 3-7 s of start-up that every other command (and --help)
    # would pay at module level
    from tailstudy.flows import runner, task_runners

    if task_runner is not None:
        task_runners.parse_task_runner(task_runner)  # a bad name fails here, in one line
    start_watchdog()  # Prefect's server and pool workers end with this process, even on kill -9
    summary = runner.run_study(str(spec_path), str(ws.root), list(force), verbose=verbose, task_runner=task_runner,
                               jobs=jobs, lock_timeout=lock_timeout, spec=study)
    log = out if fmt is TableFormat.table else err  # csv/json: stdout carries the results table only
    for rec in summary["stages"]:
        colour = {"ran": "green", "reused": "cyan", "shared": "dim"}.get(rec["status"], "white")
        log.print(Text.assemble("  ", (f"{rec['status']:<7}", colour), f" {rec['stage']:<10} {rec['key']}  {rec['label']}"),
                  highlight=False)
    counts = {s: sum(1 for r in summary["stages"] if r["status"] == s) for s in ("ran", "reused", "shared")}
    log.print(f"stages: {counts['ran']} ran, {counts['reused']} reused, {counts['shared']} shared within this run")
    if fmt is TableFormat.table:
        print_results(summary["results"])
    else:
        print_rows(summary["results"], RESULT_COLUMNS, fmt)
    log.print(f"report: {summary['report']}", highlight=False)
