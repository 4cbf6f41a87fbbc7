"""`tailstudy` command line. User errors print one line and exit 2; nothing here prints a traceback unless
TAILSTUDY_DEBUG=1."""
from __future__ import annotations

import json
import math
import os
import sys
import threading
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tailstudy.errors import TailstudyError
from tailstudy.output import ExportFormat, TableFormat, print_frame
from tailstudy.output import cell as _fmt

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
                  help="Controlled studies of long-tailed image-text data: match, count, curate, train, evaluate.")
# no markup or emoji codes: cells, paths and messages carry user data ("[/x]", ":cross_mark:"), printed as stored
out = Console(width=None if sys.stdout.isatty() else 160, markup=False, emoji=False)
err = Console(stderr=True, markup=False, emoji=False)


def _error(message: str) -> Text:
    return Text.assemble(("error:", "bold red"), " ", message)


if hasattr(getattr(typer.core, "TyperOption", None), "display_type_rich"):
    # typer 0.29's rich help prints every option's value type, flags included ("--verbose <bool>", "--help <bool>"),
    # though a flag takes no value: its help panel asks display_type_rich, which gives none for a flag here
    _display_type = typer.core.TyperOption.display_type_rich
    typer.core.TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _display_type(self, ctx)


FormatOpt = typer.Option(TableFormat.table, "--format", "-f", help="How tables print: table, csv or json (stdout).")


def _version(value: bool) -> None:
    if value:
        from tailstudy import __version__

        print(f"tailstudy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Controlled studies of long-tailed image-text data: match, count, curate, train, evaluate."""


DEFAULT_WORKSPACE = "workspace"
WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace directory (default: $TAILSTUDY_WORKSPACE or ./workspace).")


def _workspace(path: Optional[Path], create: bool = False):
    """-w, else $TAILSTUDY_WORKSPACE, else ./workspace. The rule: a workspace must exist; only the default ./workspace
    may be created, and only by the commands that build artifacts (`create`: run, match, ingest). A workspace named
    by -w or $TAILSTUDY_WORKSPACE is never created (a typo must not become a new, empty workspace), and read-only
    commands (status, verify, catalog, sql, export, count) create nothing."""
    from tailstudy.store import Workspace

    named = os.environ.get("TAILSTUDY_WORKSPACE") or None
    root = Path(path or named or DEFAULT_WORKSPACE)
    where = "-w" if path else "$TAILSTUDY_WORKSPACE" if named else None
    if root.exists() and not root.is_dir():
        _fail(f"{root.resolve()}: the workspace path is a file, not a directory")
    if not root.exists() and not (create and where is None):
        if where is None:
            _fail(f"workspace {root.resolve()} does not exist: run a study or `tailstudy match` first, or give -w")
        hint = "leave -w out" if where == "-w" else "unset TAILSTUDY_WORKSPACE"
        _fail(f"workspace {root.resolve()} ({where}) does not exist"
              + (f": create it first, or {hint} to use ./workspace" if create else ""))
    return Workspace(root)


def _fail(message: str, code: int = 2) -> None:
    err.print(_error(message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


RESULT_COLUMNS = ["factor", "level", "learner", "seed", "top1", "top5", "rho_acc", "rho_pred", "head_acc", "tail_acc"]


def print_results(results: list[dict]) -> None:
    table = Table(title="Results (ρ = Spearman with training frequency; lower = less biased)")
    for col in RESULT_COLUMNS:
        table.add_column(col, justify="right" if col not in ("factor", "level", "learner") else "left")
    for row in results:
        table.add_row(*(_fmt(row.get(c)) for c in RESULT_COLUMNS))
    out.print(table)


@app.command()
def run(
    spec: Optional[Path] = typer.Argument(None, help="Study spec YAML (default: the embedded default study)."),
    workspace: Optional[Path] = WorkspaceOpt,
    force: List[str] = typer.Option([], "--force", help="Re-run this stage even if cached (repeatable; 'all')."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's own logs."),
    task_runner: Optional[str] = typer.Option(None, "--task-runner",
                                              help="Runs the per-shard data tasks: local, threads:N, processes:N, "
                                                   "dask:N or tcp://HOST:PORT (a Dask scheduler)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="CPU-bound stage nodes (curate, evaluate, ...) that may "
                                                            "run at once; training runs overlap per train.parallel."),
    lock_timeout: Optional[float] = typer.Option(None, "--lock-timeout", help="When another run holds the "
                                                 "workspace: wait at most this many seconds (default: until it "
                                                 "ends; 0: fail at once)."),
    fmt: TableFormat = typer.Option(TableFormat.table, "--format", "-f", help="Results as table, csv or json "
                                                                              "(stdout; stage lines go to stderr)."),
) -> None:
    """Run a study end to end; stages whose inputs did not change are reused."""
    from tailstudy.spec import default_spec_path, load_spec
    from tailstudy.stages import check_force, plan_study

    if lock_timeout is not None and not (math.isfinite(lock_timeout) and lock_timeout >= 0):
        _fail(f"--lock-timeout {lock_timeout}: must be a number of seconds, 0 or more")
    spec_path = spec or default_spec_path()
    check_force(force)
    study = load_spec(spec_path)
    plan_study(study)  # validate spec and vocabulary before any orchestration starts
    ws = _workspace(workspace, create=True)
    from tailstudy.preflight import check_run

    check_run(study, ws.root, str(spec_path))  # workspace, device, arch: before the first stage, not after corpus/match/curate
    from tailstudy.lifeline import shadowed_stdlib, start_watchdog

    for problem in shadowed_stdlib()[:1]:  # Prefect's server would fail to import, and we would wait out its timeout
        _fail(problem)

    start_watchdog()  # Prefect's server and pool workers end with this process, even on kill -9
    from tailstudy.flows.runner import run_study

    if task_runner is not None:
        from tailstudy.flows.task_runners import parse_task_runner

        parse_task_runner(task_runner)  # a bad name fails here, in one line
    summary = run_study(str(spec_path), str(ws.root), list(force), verbose=verbose, task_runner=task_runner,
                        jobs=jobs, lock_timeout=lock_timeout)
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
        import pandas as pd

        print_frame(pd.DataFrame(summary["results"]).reindex(columns=RESULT_COLUMNS), fmt, out)
    log.print(f"report: {summary['report']}", highlight=False)


@app.command()
def sql(
    query: str = typer.Argument(..., help="SQL over the catalog views (captions, concepts, concept_freq, run_metrics, "
                                          "...), or @NAME for a documented query of sql/queries/."),
    workspace: Optional[Path] = WorkspaceOpt,
    fmt: TableFormat = FormatOpt,
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many rows, applied inside the query "
                                        "(default: 1000 in a table, all in csv/json; 0 = all)."),
    timeout: float = typer.Option(600.0, "--timeout", help="Stop the query after this many seconds."),
    memory_limit: Optional[float] = typer.Option(None, "--memory-limit", help="GB of memory the query may use "
                                                 "(default: half of the memory free now)."),
) -> None:
    """Query the workspace's DuckDB catalog: read-only, files outside the workspace are out of reach."""
    from tailstudy import sqlguard

    if limit is not None and limit < 0:
        _fail(f"--limit {limit}: must be 0 (all rows) or more")
    if not (math.isfinite(timeout) and timeout > 0):
        _fail(f"--timeout {timeout}: must be a positive number of seconds")
    if memory_limit is not None and not (math.isfinite(memory_limit) and memory_limit * 2**30 >= sqlguard.MIN_MEMORY):
        _fail(f"--memory-limit {memory_limit}: must be at least {sqlguard.MIN_MEMORY / 2**30:g} GB")
    rows = sqlguard.DEFAULT_ROW_LIMIT if limit is None and fmt is TableFormat.table else (limit or None)
    limits = sqlguard.Limits(rows=None if rows is None else rows + 1, seconds=timeout,
                             memory=None if memory_limit is None else int(memory_limit * 2**30))
    try:
        df, note = sqlguard.limit_note(sqlguard.guarded_query(_workspace(workspace), query, limits), rows)
    except KeyboardInterrupt:  # DuckDB was interrupted; typer would exit 130 silently
        err.print("interrupted: the query was stopped", highlight=False)
        raise typer.Exit(130) from None
    print_frame(df, fmt, out)
    if note:
        err.print(note, highlight=False, soft_wrap=True)


@app.command()
def status(workspace: Optional[Path] = WorkspaceOpt, fmt: TableFormat = FormatOpt) -> None:
    """List the artifacts of a workspace."""
    import pandas as pd

    ws = _workspace(workspace)
    rows, corrupt = [], []
    for art in ws.list_artifacts():
        problem = ws.problem(art.stage, art.key)  # sizes, Parquet magic, checksums of files up to 64 MB
        if problem:
            corrupt.append(f"corrupt: {art.stage}/{art.key}: {problem}")
        manifest = {"rows": {"CORRUPT": "rebuilt by the next run"}} if problem else art.manifest()
        counts = manifest.get("rows", {})  # json: an object; table and csv: "name=count, ..."
        rows.append({"stage": art.stage, "key": art.key,
                     "rows": counts if fmt is TableFormat.json else ", ".join(f"{k}={v}" for k, v in counts.items()),
                     "seconds": float(manifest.get("seconds", float("nan")))})
    if not rows and fmt is TableFormat.table:
        out.print(f"{ws.root}: no artifacts yet")
        return
    print_frame(pd.DataFrame(rows, columns=["stage", "key", "rows", "seconds"]), fmt, out, title=str(ws.root))
    corrupt += [f"corrupt: {problem}" for problem in ws.record_problems()]
    for line in corrupt:
        err.print(line, highlight=False, soft_wrap=True)


@app.command()
def verify(workspace: Optional[Path] = WorkspaceOpt) -> None:
    """Check every artifact against its manifest (sizes and sha256 of all files); exit 2 naming what is corrupt."""
    ws = _workspace(workspace)
    arts = ws.list_artifacts()
    corrupt = [(art, ws.problem(art.stage, art.key, full=True)) for art in arts]
    corrupt = [(art, problem) for art, problem in corrupt if problem]
    for art, problem in corrupt:
        err.print(f"corrupt: {art.stage}/{art.key}: {problem}", highlight=False, soft_wrap=True)
    records = ws.record_problems(full=True)  # studies/<name>/: runs, subsets, spec
    for problem in records:
        err.print(f"corrupt: {problem}", highlight=False, soft_wrap=True)
    out.print(f"{ws.root}: {len(arts)} artifacts checked, {len(corrupt)} corrupt"
              + (f"; {len(records)} corrupt study records" if records else ""), highlight=False)
    if corrupt or records:
        raise typer.Exit(2)


@app.command(name="catalog")
def catalog_cmd(workspace: Optional[Path] = WorkspaceOpt) -> None:
    """(Re)build the DuckDB catalog's views over the workspace's artifacts."""
    from tailstudy import catalog

    ws = _workspace(workspace)
    live = catalog.refresh(ws)
    out.print(f"{ws.catalog_path}: views with data: {', '.join(live) or 'none'}")


def _caption_bar(desc: str):
    """A progress callback(step, total) in captions; no tqdm monitor thread, so that a single-threaded process can
    fork its match workers."""
    from tqdm import tqdm

    from tailstudy.progress import item_bar

    tqdm.monitor_interval = 0
    return item_bar(desc, unit="caption")


def _say(message: str) -> None:
    err.print(message, highlight=False, soft_wrap=True)


def _exclusive(ws):
    """For match / ingest: a watchdog that ends our workers with us (even on kill -9), and the workspace lock (a second
    command on the workspace waits, then reuses what the first built)."""
    from tailstudy.lifeline import start_watchdog
    from tailstudy.locks import stderr_say

    start_watchdog()
    return ws.lock(None, stderr_say)


def _check_match_options(method: str, threshold: Optional[float], workers: Optional[int], index: bool,
                         dedup_col: Optional[str]) -> None:
    from tailstudy.matching import MATCHERS

    if method not in MATCHERS:
        _fail(f"--method {method}: use {' | '.join(MATCHERS)}")
    if threshold is not None and method != "semantic":
        _fail("--threshold applies only to --method semantic")
    if threshold is not None and not 0 <= threshold <= 1:
        _fail(f"--threshold {threshold}: must be between 0 and 1")
    if workers is not None and workers < 1:
        _fail(f"--workers {workers}: must be at least 1")
    if dedup_col and not index:
        _fail("--url-col / --hash-col apply only with --index")


@app.command()
def match(
    captions: Path = typer.Argument(..., help="Caption file (.parquet, .csv, .tsv, .jsonl; text formats may be .gz) "
                                              "or a folder of such shards."),
    vocab: str = typer.Option(..., "--vocab", help="A built-in vocabulary (imagenet1k, imagenet100, cub, food101, "
                                                   "flowers102, pets, dtd, places365, eurosat, cars, aircraft) or a "
                                                   "CSV/TSV/JSON/YAML file."),
    method: str = typer.Option("phrase", "--method", "-m", help="phrase | bag | semantic"),
    caption_col: Optional[str] = typer.Option(None, "--caption-col", help="Caption column (default: caption, text "
                                                                          "or TEXT, the first present)."),
    id_col: Optional[str] = typer.Option(None, "--id-col", help="Id column (default: sample_id when present, else "
                                                                "the row number)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="semantic only: the similarity a match "
                                                                        "needs (default 0.45)."),
    name: Optional[str] = typer.Option(None, "--name", help="Corpus name in concept_freq (default: the file or "
                                                            "folder name)."),
    workers: Optional[int] = typer.Option(None, "--workers", "-j", help="Processes (default: one per core)."),
    force: bool = typer.Option(False, "--force", help="Match again even when the artifact exists."),
    index: bool = typer.Option(False, "--index", help="Also build the captions' token index (for tailstudy count, "
                                                      "the tokens view, duplicate-aware counts and descriptiveness)."),
    url_col: Optional[str] = typer.Option(None, "--url-col", help="--index: image URL column for duplicate-aware "
                                                                  "counts (default: url, URL or image_url if present)."),
    hash_col: Optional[str] = typer.Option(None, "--hash-col", help="--index: image-hash column (default: sha256, md5, "
                                                                    "sha512 or image_hash if present)."),
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Match captions to concepts; matches and concept frequencies land in the catalog for `tailstudy sql`."""
    from tailstudy.stages import match_captions

    _check_match_options(method, threshold, workers, index, url_col or hash_col)
    ws = _workspace(workspace, create=True)
    with _exclusive(ws):
        with _caption_bar(f"match {captions.name}") as advance:
            results = match_captions(ws, captions, vocab, method, {"threshold": threshold} if threshold is not None
                                     else {}, caption_col, id_col, name, workers, advance, force)
        if index:
            from tailstudy.describe import index_and_describe

            results.update(index_and_describe(ws, captions, vocab, results, caption_col, id_col, force, url_col,
                                              hash_col))
        from tailstudy import catalog  # duckdb

        catalog.refresh(ws)
    for stage, result in results.items():
        out.print(f"  {result.status:<7} {stage:<10} {result.key}", highlight=False)
    freq = results["frequency"].manifest()
    stats = freq["imbalance"]
    out.print(f"{stats['captions']:,} captions: {stats['captions'] - stats['no_concept']:,} with a concept "
              f"({stats['several_concepts']:,} with several), {stats['total']:,} matches; "
              f"{stats['concepts'] - stats['zero_concepts']:,} of {stats['concepts']:,} concepts occur; "
              f"Gini {_fmt(stats['gini'])}", highlight=False)
    where = f" -w {workspace}" if workspace else ""
    out.print(f"corpus {freq['corpus']!r} in concept_freq, matches, imbalance; e.g. tailstudy sql @top_concepts{where}, "
              f"@concept_head_tail, @caption_coverage, @corpus_vs_reference", highlight=False, soft_wrap=True)


@app.command()
def export(
    subset: str = typer.Argument(..., help="A subset: its curate key, or FACTOR=LEVEL of a study (e.g. caption=a_cname)."),
    out_dir: Path = typer.Argument(..., metavar="OUT", help="New folder to write the export into."),
    fmt: ExportFormat = typer.Option(ExportFormat.webdataset, "--format", "-f",
                            help="webdataset (tar shards 00000.tar, ...) or csv (images/ + train.csv)."),
    study: Optional[str] = typer.Option(None, "--study", help="The study whose FACTOR=LEVEL is meant."),
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Export a curated subset (its samples, the level's captions, its repeats) for open_clip_train."""
    from tailstudy.export import export_subset

    manifest = export_subset(_workspace(workspace), subset, fmt.value, out_dir, study)
    label = f"{manifest['factor']}={manifest['level']}" if manifest["factor"] else manifest["subset_key"]
    out.print(f"{label} (subset {manifest['subset_key']}): {manifest['samples']:,} samples "
              f"({manifest['unique_samples']:,} distinct) -> {out_dir} [{fmt.value}], sha256 {manifest['sha256'][:16]}",
              highlight=False, soft_wrap=True)
    out.print("train with open_clip:", highlight=False)
    print(manifest["open_clip_train"])


@app.command()
def count(
    phrase: str = typer.Argument(..., help="Any phrase, e.g. \"red fox\"."),
    bag: bool = typer.Option(False, "--bag", help="Count captions holding every lemma of the phrase, anywhere (the "
                                                  "paper's bag rule, no negatives) instead of the phrase itself."),
    plurals: bool = typer.Option(False, "--plurals", help="Phrase: the last word may also be plural (as matching)."),
    corpus: Optional[str] = typer.Option(None, "--corpus", help="Indexed corpus (default: the only one)."),
    examples: int = typer.Option(3, "--examples", help="Example captions to show."),
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Exact count of captions containing a phrase, from a corpus's token index (tailstudy match --index)."""
    from tailstudy.index import count as count_phrase, find_index

    name, index_dir = find_index(_workspace(workspace), corpus)
    found = count_phrase(index_dir, phrase, bag, plurals, max(0, examples))
    rule = "all lemmas of" if bag else "the phrase" + (" (or its plurals)" if plurals else "")
    share = found["count"] / found["captions"] if found["captions"] else 0.0
    out.print(f"{found['count']:,} of {found['captions']:,} captions of {name!r} ({share:.4%}) contain {rule} "
              f"{phrase!r} ({found['seconds'] * 1000:.0f} ms)", highlight=False, soft_wrap=True)
    for sample_id, caption in found["examples"]:
        out.print(f"  {sample_id}: {caption}", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- deploy / submit (a Prefect server; deploy/README)

PROCESS_POOL = "tailstudy-process"
GPU_POOL = "tailstudy-gpu"


def _prefect_file(path: Optional[Path], hint: str = "give --prefect-file") -> Path:
    from tailstudy.paths import REPO_ROOT

    found = (path or REPO_ROOT / "deploy" / "prefect.yaml").resolve()
    if path is None and not found.is_file():
        # an installed wheel: deploy/prefect.yaml's entrypoints are files of the checkout (flows/deployments.py), and
        # process-pool workers run the flows from the directory `prefect deploy` ran in, so shipping it would not do
        _fail("deployments need a checkout of the tailstudy repository (deploy/prefect.yaml runs flows/deployments.py "
              f"from it); this tailstudy is an installed package: run this from a clone, or {hint}")
    if not found.is_file():
        _fail(f"{found}: no such prefect.yaml")
    return found


def _deployments(prefect_file: Path) -> list[dict]:
    import yaml

    try:
        data = yaml.safe_load(prefect_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        _fail(f"{prefect_file}: invalid YAML")
    found = [d for d in data.get("deployments") or [] if isinstance(d, dict) and d.get("name")]
    if not found:
        _fail(f"{prefect_file}: no named deployments")
    return found


def _server_url() -> str:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        _fail("no Prefect server configured: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api); "
              "`tailstudy run` runs a study without one")
    return url


def _entry_kind(deployment: dict) -> str:
    """flows/deployments.py:study -> 'study' (the entry flow's function name)."""
    return str(deployment.get("entrypoint", "")).rpartition(":")[2]


def _ensure_pools(gpu: bool) -> dict[str, str]:
    """Create the work pools tailstudy's deployments use, where missing -> {pool: 'exists'|'created'|'absent'}."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    from tailstudy.paths import REPO_ROOT

    wanted = {PROCESS_POOL: ("process", ProcessWorker.get_default_base_job_template())}
    gpu_template = REPO_ROOT / "deploy" / "work-pools" / "kubernetes-gpu.json"
    if gpu:
        wanted[GPU_POOL] = ("kubernetes", json.loads(gpu_template.read_text()))
    status: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for name in (PROCESS_POOL, GPU_POOL):
            try:
                client.read_work_pool(name)
                status[name] = "exists"
                continue
            except ObjectNotFound:
                pass
            if name not in wanted:
                status[name] = "absent"
                continue
            kind, template = wanted[name]
            client.create_work_pool(WorkPoolCreate(name=name, type=kind, base_job_template=template))
            status[name] = "created"
    return status


@app.command()
def deploy(
    names: List[str] = typer.Option([], "--name", "-n", help="Deploy only these deployments of deploy/prefect.yaml "
                                                             "(repeatable; default: all whose work pool exists)."),
    gpu: bool = typer.Option(False, "--gpu", help=f"Also create the Kubernetes GPU pool {GPU_POOL!r} "
                                                  "(deploy/work-pools/kubernetes-gpu.json) and deploy to it."),
    prefect_file: Optional[Path] = typer.Option(None, "--prefect-file", help="Default: deploy/prefect.yaml."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show `prefect deploy`'s own output."),
) -> None:
    """Register tailstudy's deployments on the Prefect server at PREFECT_API_URL (creating missing work pools)."""
    import subprocess

    from tailstudy.paths import REPO_ROOT

    url = _server_url()
    path = _prefect_file(prefect_file)
    deployments = _deployments(path)
    unknown = [n for n in names if n not in {d["name"] for d in deployments}]
    if unknown:
        _fail(f"--name {unknown[0]}: no such deployment in {path} "
              f"(known: {', '.join(d['name'] for d in deployments)})")
    try:
        pools = _ensure_pools(gpu)
    except Exception as exc:  # connection refused, bad URL, server error
        _fail(f"cannot reach the Prefect server at {url}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    for pool, state in pools.items():
        if state != "absent":
            out.print(f"  work pool {pool}: {state}", highlight=False)
    pool_of = {d["name"]: (d.get("work_pool") or {}).get("name") for d in deployments}
    chosen = list(names) or [d["name"] for d in deployments if pools.get(pool_of[d["name"]]) in ("exists", "created")]
    missing = [n for n in chosen if pools.get(pool_of[n]) not in ("exists", "created")]
    if missing:
        _fail(f"deployment {missing[0]} needs work pool {pool_of[missing[0]]!r}, which does not exist "
              f"(--gpu creates {GPU_POOL!r})")
    if not chosen:
        _fail("nothing to deploy")
    command = [sys.executable, "-m", "prefect", "deploy", "--prefect-file", str(path)]
    for name in chosen:
        command += ["--name", name]
    env = {**os.environ, "PREFECT_CLI_PROMPT": "false", "PREFECT_API_URL": url}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if verbose or done.returncode != 0:
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
    created = [line.split("'")[1] for line in done.stdout.splitlines() if "successfully created with id" in line]
    if done.returncode != 0 or len(created) != len(chosen):
        _fail(f"prefect deploy failed (exit {done.returncode}); deployed {len(created)} of {len(chosen)}", 1)
    for full in created:
        out.print(f"  deployed {full}", highlight=False)
    out.print(f"{len(created)} deployments on {url}; start a worker with "
              f"`prefect worker start --pool {PROCESS_POOL}`", highlight=False)


@app.command()
def submit(
    spec: Optional[Path] = typer.Argument(None, help="Study spec YAML, read here and sent as text "
                                                     "(default: the embedded default study)."),
    deployment: str = typer.Option("study", "--deployment", "-d", help="A deployment of deploy/prefect.yaml "
                                   "(study, study-gpu, match, match-dask, train, train-gpu, ...) or FLOW/DEPLOYMENT."),
    workspace: Optional[str] = typer.Option(None, "--workspace", "-w", help="Workspace path as the worker sees it "
                                            "(default: the worker's $TAILSTUDY_WORKSPACE, else ./workspace)."),
    force: List[str] = typer.Option([], "--force", help="Re-run this stage even if cached (repeatable; 'all')."),
    task_runner: Optional[str] = typer.Option(None, "--task-runner", help="study/match: local, threads[:N], "
                                              "processes[:N], dask[:N] or tcp://HOST:PORT of a Dask scheduler."),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="train: GPUs per run (sets the flow parameter and the "
                                                            "work pool's `gpus` job variable)."),
    learners: List[str] = typer.Option([], "--learner", "--model", help="train: only this learner (repeatable; "
                                       "--model: its old name)."),
    levels: List[str] = typer.Option([], "--level", help="train: only this factor level (repeatable)."),
    seeds: List[int] = typer.Option([], "--seed", help="train: only this seed (repeatable)."),
    dispatch: Optional[str] = typer.Option(None, "--dispatch", help="study: FLOW/DEPLOYMENT that trains each run as "
                                           "a child flow run (study-gpu: tailstudy-train/train-gpu)."),
    watch: bool = typer.Option(False, "--watch", help="Wait for the flow run to end; exit 1 unless it completed."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="With --watch: give up after this many seconds."),
) -> None:
    """Trigger a run of a deployed flow on the Prefect server at PREFECT_API_URL (see `tailstudy deploy`)."""
    from tailstudy.spec import default_spec_path, load_spec
    from tailstudy.stages import check_force

    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        _fail(f"--timeout {timeout}: must be a positive number of seconds")
    url = _server_url()
    spec_path = spec or default_spec_path()
    load_spec(spec_path)  # a bad spec fails here, not on the worker
    check_force(force)
    kind, full = _resolve_deployment(deployment)
    # "models": the train flow's parameter keeps its old name, which deployments already registered take
    params = {"spec_yaml": Path(spec_path).read_text(encoding="utf-8"), "workspace": workspace,
              "force": list(force) or None, "task_runner": task_runner, "dispatch": dispatch, "gpus": gpus,
              "models": list(learners) or None, "levels": list(levels) or None, "seeds": list(seeds) or None}
    params = _check_submit_params(kind, {k: v for k, v in params.items() if v is not None})
    flow_run = _trigger(full, url, params, {"gpus": gpus} if gpus is not None else None)
    out.print(f"submitted {full}: flow run {flow_run.name} ({flow_run.id})", highlight=False)
    if watch:
        _watch(flow_run, timeout)


def _resolve_deployment(deployment: str) -> tuple[str, str]:
    """'study-gpu' (a name in deploy/prefect.yaml) or 'FLOW/DEPLOYMENT' -> (entry flow kind, FLOW/DEPLOYMENT)."""
    from tailstudy.flows.deployments import ENTRY_FLOWS

    flow_kind = {flow_.name: kind for kind, flow_ in ENTRY_FLOWS.items()}
    if "/" in deployment:
        kind = flow_kind.get(deployment.split("/", 1)[0])
        if kind is None:
            _fail(f"--deployment {deployment}: not a tailstudy flow ({', '.join(flow_kind)})")
        return kind, deployment
    entry = next((d for d in _deployments(_prefect_file(None, "give --deployment FLOW/DEPLOYMENT"))
                  if d["name"] == deployment), None)
    if entry is None or _entry_kind(entry) not in ENTRY_FLOWS:
        _fail(f"--deployment {deployment}: no such deployment in deploy/prefect.yaml")
    kind = _entry_kind(entry)
    return kind, f"{ENTRY_FLOWS[kind].name}/{deployment}"


SUBMIT_OPTIONS = {"task_runner": ("--task-runner", ("study", "match")), "dispatch": ("--dispatch", ("study",)),
                  "gpus": ("--gpus", ("train",)), "models": ("--learner", ("train",)),
                  "levels": ("--level", ("train",)), "seeds": ("--seed", ("train",))}


def _check_submit_params(kind: str, params: dict) -> dict:
    """Each option only where its flow takes it, and valid there."""
    from tailstudy.flows.task_runners import parse_task_runner

    for name, (flag, kinds) in SUBMIT_OPTIONS.items():
        if name in params and kind not in kinds:
            _fail(f"{flag}: only for the {' / '.join(kinds)} deployments")
    if "task_runner" in params:
        parse_task_runner(params["task_runner"])
    if "/" not in params.get("dispatch", "/"):
        _fail("--dispatch: give FLOW/DEPLOYMENT, e.g. tailstudy-train/train-gpu")
    if params.get("gpus", 0) < 0:
        _fail("--gpus: must be 0 or more")
    return params


def _trigger(full: str, url: str, params: dict, job_variables: dict | None):
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        return run_deployment(full, parameters=params, job_variables=job_variables, timeout=0, tags=["tailstudy"])
    except ObjectNotFound:
        _fail(f"deployment {full} is not on the server at {url} (run `tailstudy deploy` first)")
    except Exception as exc:
        _fail(f"cannot submit {full} to {url}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def _watch(flow_run, timeout: float | None) -> None:
    """Wait for the flow run to end; exit 1 unless it completed."""
    import time

    from prefect.client.orchestration import get_client

    started = time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(flow_run.id).state
            if state is not None and state.is_final():
                break
            if timeout is not None and time.monotonic() - started > timeout:
                _fail(f"flow run {flow_run.name}: still {state.name if state else 'pending'} after {timeout:g} s", 1)
            time.sleep(2)
    out.print(f"flow run {flow_run.name}: {state.name}", highlight=False)
    if not state.is_completed():
        _fail(f"flow run {flow_run.name} ended {state.name}: {state.message or ''}".rstrip(": "), 1)


@app.command()
def ingest(
    urls: Path = typer.Argument(..., help="URL list: .parquet, .csv, .tsv or .jsonl with a URL and a caption column "
                                          "(extra columns are kept)."),
    url_col: Optional[str] = typer.Option(None, "--url-col", help="URL column (default: the preset's, else url)."),
    caption_col: Optional[str] = typer.Option(None, "--caption-col", help="Caption column (default: the preset's, "
                                                                          "else caption)."),
    id_col: Optional[str] = typer.Option(None, "--id-col", help="Unique sample-id column (default: the row number)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Column names of laion | cc12m | datacomp."),
    image_size: int = typer.Option(64, "--image-size", help="Images are resized to this size (pixels, square)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="parquet | csv | tsv | jsonl (default: from the name)."),
    no_header: bool = typer.Option(False, "--no-header", help="CSV/TSV without a header row: columns url, caption."),
    resize_mode: str = typer.Option("center_crop", "--resize-mode", help="center_crop | border | keep_ratio | no."),
    threads: int = typer.Option(16, "--threads", help="Download threads per process."),
    processes: int = typer.Option(1, "--processes", help="Download processes."),
    timeout: int = typer.Option(10, "--timeout", help="Seconds per request."),
    max_image_mb: float = typer.Option(32.0, "--max-image-mb", help="Refuse bigger downloads (too_large)."),
    retry_rounds: int = typer.Option(1, "--retry-rounds", help="Rounds re-fetching URLs that failed transiently."),
    retry_wait: float = typer.Option(5.0, "--retry-wait", help="Seconds to wait before each retry round."),
    shard_size: int = typer.Option(10000, "--shard-size", help="Samples per webdataset shard."),
    refetch: int = typer.Option(0, "--refetch", help="Later retries: N re-fetches what still failed transiently in "
                                                     "the corpus of N-1 (its finished shards are reused)."),
    workspace: Optional[Path] = WorkspaceOpt,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show img2dataset's own output."),
) -> None:
    """Download a URL list with img2dataset into webdataset shards (a corpus artifact a study can reuse); failures are
    recorded per sample (the `downloads` view), transient ones retried; resumes, never re-fetching finished shards."""
    from pydantic import ValidationError

    from tailstudy import catalog
    from tailstudy.errors import SpecError
    from tailstudy.spec import UrlsCorpusSpec, _first_error
    from tailstudy.stages import run_local, source_node

    options = {"source": "urls", "path": str(urls), "url_col": url_col, "caption_col": caption_col, "id_col": id_col,
               "preset": preset, "image_size": image_size, "format": fmt, "header": not no_header,
               "resize_mode": resize_mode, "threads": threads, "processes": processes, "timeout": timeout,
               "max_image_mb": max_image_mb, "retry_rounds": retry_rounds, "retry_wait": retry_wait,
               "shard_size": shard_size, "refetch": refetch}
    try:
        cfg = UrlsCorpusSpec.model_validate({k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        raise SpecError(f"ingest: {_first_error(exc)}") from None
    ws = _workspace(workspace, create=True)
    try:
        with _exclusive(ws):
            result = run_local(ws, [source_node(cfg)], quiet=not verbose, say=_say)["source"]
    except KeyboardInterrupt:  # typer would exit 130 silently
        err.print("interrupted: finished shards are kept; run the same command again to resume", highlight=False)
        raise typer.Exit(130) from None
    summary = result.manifest()["status"]
    catalog.refresh(ws)
    out.print(f"{result.status} corpus {result.key}: {summary['success']} of {summary['samples']} images "
              f"({summary['success_rate']:.1%}), {summary['bytes']:,} bytes"
              + (f", {summary['retried_ok']} recovered by retries" if summary.get("retried_ok") else ""),
              highlight=False)
    if summary["errors"]:
        out.print("errors: " + ", ".join(f"{kind} {n}" for kind, n in summary["errors"].items()), highlight=False)
    out.print(f"path: {result.path}", highlight=False)
    out.print(f'per sample: tailstudy sql "select status, error_kind, count(*) from downloads where corpus_key = '
              f"'{result.key}' group by all\"", highlight=False)


def main() -> None:
    from tailstudy.env import configure_offline_env
    from tailstudy.lifeline import prefect_startup_defaults, startup_timeout_message

    configure_offline_env()  # an entry point sets the process environment; importing the library does not
    prefect_startup_defaults()
    try:
        app(standalone_mode=True)
    except TailstudyError as exc:
        err.print(_error(str(exc)), highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: finished artifacts are kept; run again to resume")
        sys.exit(130)
    except Exception as exc:  # a bug, not a user error: one line unless debugging
        if os.environ.get("TAILSTUDY_DEBUG"):
            raise
        from tailstudy.store import disk_full_error, is_disk_full

        if is_disk_full(exc):  # a writer that does not say so itself (Prefect's result store, a library)
            err.print(_error(str(disk_full_error(Path(getattr(exc, "filename", None) or os.getcwd())))),
                      highlight=False, soft_wrap=True)
            sys.exit(2)
        if startup_timeout_message(exc):  # the machine, not the input: exit 1
            err.print(_error(startup_timeout_message(exc)), highlight=False, soft_wrap=True)
            sys.exit(1)
        err.print(_error(f"{type(exc).__name__}: {exc} (set TAILSTUDY_DEBUG=1 for the traceback)"),
                  highlight=False, soft_wrap=True)
        sys.exit(1)


def entry() -> None:
    """The `tailstudy` command: main(), then an exit without the interpreter's teardown where that is safe.

    Tearing down the 700-odd modules a command imports (pyarrow, duckdb, matplotlib, ...) takes 0.25-0.3 s of every
    command's wall time and does nothing a finished command needs. So once main() is done, where no Prefect is loaded
    (its services stop in their own exit hooks and threads) and no other non-daemon thread runs, the exit hooks run,
    stdout and stderr are flushed and the process ends at once. Every artifact is already written and renamed into
    place by then (files are closed where they are written)."""
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not isinstance(code, (int, type(None))) or "prefect" in sys.modules or others:
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    entry()
