"""The workspace and its data, without Prefect: match and count captions, ingest a URL list, query the catalog, list and
verify artifacts, export a subset."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from tqdm import tqdm

from tailstudy import catalog, sqlguard
from tailstudy.errors import SpecError
from tailstudy.export import export_subset
from tailstudy.flows.cli_common import FormatOpt, WorkspaceOpt, err, fail, open_workspace, out, print_rows, say
from tailstudy.index import count as count_phrase, find_index
from tailstudy.lifeline import start_watchdog
from tailstudy.locks import stderr_say
from tailstudy.matching import MATCHERS
from tailstudy.output import ExportFormat, TableFormat, print_frame
from tailstudy.output import cell as _fmt
from tailstudy.progress import item_bar
from tailstudy.spec import UrlsCorpusSpec, _first_error
from tailstudy.stages import index_and_describe, match_captions, run_local, source_node

PANEL = "Workspace and data"
app = typer.Typer()


@app.command(rich_help_panel=PANEL)
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
    _check_match_options(method, threshold, workers, index, url_col or hash_col)
    ws = open_workspace(workspace, create=True)
    with _exclusive(ws):
        with _caption_bar(f"match {captions.name}") as advance:
            results = match_captions(ws, captions, vocab, method, {"threshold": threshold} if threshold is not None
                                     else {}, caption_col, id_col, name, workers, advance, force)
        if index:
            results.update(index_and_describe(ws, captions, vocab, results, caption_col, id_col, force, url_col,
                                              hash_col))
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


def _check_match_options(method: str, threshold: Optional[float], workers: Optional[int], index: bool,
                         dedup_col: Optional[str]) -> None:
    if method not in MATCHERS:
        fail(f"--method {method}: use {' | '.join(MATCHERS)}")
    if threshold is not None and method != "semantic":
        fail("--threshold applies only to --method semantic")
    if threshold is not None and not 0 <= threshold <= 1:
        fail(f"--threshold {threshold}: must be between 0 and 1")
    if workers is not None and workers < 1:
        fail(f"--workers {workers}: must be at least 1")
    if dedup_col and not index:
        fail("--url-col / --hash-col apply only with --index")


def _caption_bar(desc: str):
    """A progress callback(step, total) in captions; no tqdm monitor thread, so that a single-threaded process can
    fork its match workers."""
    tqdm.monitor_interval = 0
    return item_bar(desc, unit="caption")


def _exclusive(ws):
    """For match / ingest: a watchdog that ends our workers with us (even on kill -9), and the workspace lock (a second
    command on the workspace waits, then reuses what the first built)."""
    start_watchdog()
    return ws.lock(None, stderr_say)


@app.command(rich_help_panel=PANEL)
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
    name, index_dir = find_index(open_workspace(workspace), corpus)
    found = count_phrase(index_dir, phrase, bag, plurals, max(0, examples))
    rule = "all lemmas of" if bag else "the phrase" + (" (or its plurals)" if plurals else "")
    share = found["count"] / found["captions"] if found["captions"] else 0.0
    out.print(f"{found['count']:,} of {found['captions']:,} captions of {name!r} ({share:.4%}) contain {rule} "
              f"{phrase!r} ({found['seconds'] * 1000:.0f} ms)", highlight=False, soft_wrap=True)
    for sample_id, caption in found["examples"]:
        out.print(f"  {sample_id}: {caption}", highlight=False, soft_wrap=True)


@app.command(rich_help_panel=PANEL)
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
    options = {"source": "urls", "path": str(urls), "url_col": url_col, "caption_col": caption_col, "id_col": id_col,
               "preset": preset, "image_size": image_size, "format": fmt, "header": not no_header,
               "resize_mode": resize_mode, "threads": threads, "processes": processes, "timeout": timeout,
               "max_image_mb": max_image_mb, "retry_rounds": retry_rounds, "retry_wait": retry_wait,
               "shard_size": shard_size, "refetch": refetch}
    try:
        cfg = UrlsCorpusSpec.model_validate({k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        raise SpecError(f"ingest: {_first_error(exc)}") from None
    ws = open_workspace(workspace, create=True)
    try:
        with _exclusive(ws):
            result = run_local(ws, [source_node(cfg)], quiet=not verbose, say=say)["source"]
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


@app.command(rich_help_panel=PANEL)
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
    if limit is not None and limit < 0:
        fail(f"--limit {limit}: must be 0 (all rows) or more")
    if not (math.isfinite(timeout) and timeout > 0):
        fail(f"--timeout {timeout}: must be a positive number of seconds")
    if memory_limit is not None and not (math.isfinite(memory_limit) and memory_limit * 2**30 >= sqlguard.MIN_MEMORY):
        fail(f"--memory-limit {memory_limit}: must be at least {sqlguard.MIN_MEMORY / 2**30:g} GB")
    rows = sqlguard.DEFAULT_ROW_LIMIT if limit is None and fmt is TableFormat.table else (limit or None)
    limits = sqlguard.Limits(rows=None if rows is None else rows + 1, seconds=timeout,
                             memory=None if memory_limit is None else int(memory_limit * 2**30))
    try:
        df, note = sqlguard.limit_note(sqlguard.guarded_query(open_workspace(workspace), query, limits), rows)
    except KeyboardInterrupt:  # DuckDB was interrupted; typer would exit 130 silently
        err.print("interrupted: the query was stopped", highlight=False)
        raise typer.Exit(130) from None
    print_frame(df, fmt, out)
    if note:
        say(note)


@app.command(rich_help_panel=PANEL)
def status(workspace: Optional[Path] = WorkspaceOpt, fmt: TableFormat = FormatOpt) -> None:
    """List the artifacts of a workspace."""
    ws = open_workspace(workspace)
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
    print_rows(rows, ["stage", "key", "rows", "seconds"], fmt, title=str(ws.root))
    corrupt += [f"corrupt: {problem}" for problem in ws.record_problems()]
    for line in corrupt:
        say(line)


@app.command(rich_help_panel=PANEL)
def verify(workspace: Optional[Path] = WorkspaceOpt) -> None:
    """Check every artifact against its manifest (sizes and sha256 of all files); exit 2 naming what is corrupt."""
    ws = open_workspace(workspace)
    arts = ws.list_artifacts()
    corrupt = [(art, ws.problem(art.stage, art.key, full=True)) for art in arts]
    corrupt = [(art, problem) for art, problem in corrupt if problem]
    for art, problem in corrupt:
        say(f"corrupt: {art.stage}/{art.key}: {problem}")
    records = ws.record_problems(full=True)  # studies/<name>/: runs, subsets, spec
    for problem in records:
        say(f"corrupt: {problem}")
    out.print(f"{ws.root}: {len(arts)} artifacts checked, {len(corrupt)} corrupt"
              + (f"; {len(records)} corrupt study records" if records else ""), highlight=False)
    if corrupt or records:
        raise typer.Exit(2)


@app.command(name="catalog", rich_help_panel=PANEL)
def catalog_cmd(workspace: Optional[Path] = WorkspaceOpt) -> None:
    """(Re)build the DuckDB catalog's views over the workspace's artifacts."""
    ws = open_workspace(workspace)
    live = catalog.refresh(ws)
    out.print(f"{ws.catalog_path}: views with data: {', '.join(live) or 'none'}")


@app.command(rich_help_panel=PANEL)
def export(
    subset: str = typer.Argument(..., help="A subset: its curate key, or FACTOR=LEVEL of a study (e.g. caption=a_cname)."),
    out_dir: Path = typer.Argument(..., metavar="OUT", help="New folder to write the export into."),
    fmt: ExportFormat = typer.Option(ExportFormat.webdataset, "--format", "-f",
                                     help="webdataset (tar shards 00000.tar, ...) or csv (images/ + train.csv)."),
    study: Optional[str] = typer.Option(None, "--study", help="The study whose FACTOR=LEVEL is meant."),
    workspace: Optional[Path] = WorkspaceOpt,
) -> None:
    """Export a curated subset (its samples, the level's captions, its repeats) for open_clip_train."""
    manifest = export_subset(open_workspace(workspace), subset, fmt.value, out_dir, study)
    label = f"{manifest['factor']}={manifest['level']}" if manifest["factor"] else manifest["subset_key"]
    out.print(f"{label} (subset {manifest['subset_key']}): {manifest['samples']:,} samples "
              f"({manifest['unique_samples']:,} distinct) -> {out_dir} [{fmt.value}], sha256 {manifest['sha256'][:16]}",
              highlight=False, soft_wrap=True)
    out.print("train with open_clip:", highlight=False)
    print(manifest["open_clip_train"])
