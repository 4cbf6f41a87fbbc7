"""The study flow: data -> match -> frequency -> curate -> train -> evaluate -> report, on Prefect.

Tasks are thin: each calls one ``pipeline.stages.build_*`` function. Prefect caches a stage by its content-addressed
stage key (never the default policy, which includes the run id), persists only the small stage record, and re-runs a
stage when its artifact is missing from the workspace or the user forces it.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Callable

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import TaskRunContext

from pipeline import catalog
from pipeline import stages as S
from pipeline.progress import epoch_bar, item_bar
from pipeline.spec import load_spec
from pipeline.store import Workspace


def stage_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Workspace + stage + stage key: the same inputs in the same workspace hit the same cache entry.
    (The key names a file in the result store, so the workspace path enters as a digest.)"""
    workspace = hashlib.sha256(parameters["workspace"].encode()).hexdigest()[:12]
    return f"{parameters['stage']}-{parameters['key']}-{workspace}"


@task(cache_key_fn=stage_cache_key, persist_result=True, retries=0)
def stage_task(workspace: str, stage: str, key: str, label: str, build: Callable[[], S.StageResult]) -> dict:
    result = build()
    return {"stage": result.stage, "key": result.key, "status": result.status, "label": result.label,
            "path": str(result.path)}


class StageRunner:
    """Runs stages through the Prefect task, remembering what ran, what was reused and what was shared in-run."""

    def __init__(self, ws: Workspace, force: set[str]):
        self.ws = ws
        self.force = force
        self.records: list[dict] = []
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, stage: str, key: str, label: str, build: Callable[[bool], S.StageResult]) -> dict:
        if (stage, key) in self.seen:  # e.g. the base cell appears under every factor; build it once
            record = {"stage": stage, "key": key, "status": "shared", "label": label}
            self.records.append(record)
            return record
        self.seen.add((stage, key))
        forced = stage in self.force or "all" in self.force
        refresh = forced or not self.ws.exists(stage, key)
        state = stage_task.with_options(name=stage, task_run_name=f"{stage}[{label or key}]", refresh_cache=refresh)(
            str(self.ws.root), stage, key, label, lambda: build(forced), return_state=True)
        record = dict(state.result())
        if state.name == "Cached":
            record["status"] = "reused"
        record["label"] = label
        self.records.append(record)
        return record


def _artifact_key(*parts: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:100]


def publish_artifacts(plan: S.StudyPlan, run_metrics, report_dir: Path) -> None:
    """Prefect artifacts: the study's runs table, one table per factor level, and the report."""
    cols = ["factor", "level", "model", "seed", "top1", "rho_acc", "rho_pred", "head_acc", "tail_acc"]
    rows = run_metrics[cols].round(4).to_dict("records")
    create_table_artifact(rows, key=_artifact_key("study", plan.spec.name), description=f"runs of {plan.spec.name}")
    for (factor, level), part in run_metrics.groupby(["factor", "level"], sort=False):
        create_table_artifact(part[cols].round(4).to_dict("records"),
                              key=_artifact_key(plan.spec.name, factor, level),
                              description=f"{plan.spec.name}: {factor} = {level}")
    # report_ui.md inlines its figures as data URIs: the Prefect UI cannot load files from the workspace
    create_markdown_artifact((report_dir / "report_ui.md").read_text() + f"\n\nHTML report: `{report_dir / 'report.html'}`\n",
                             key=_artifact_key("report", plan.spec.name), description="study report")


def open_study(spec_path: str, workspace: str, force: list[str] | None):
    """-> (spec, workspace, plan, stage runner) for a flow run; stale temp dirs of killed runs are cleared first."""
    spec = load_spec(spec_path)
    ws = Workspace(workspace)
    ws.clean_stale_temps()
    return spec, ws, S.plan_study(spec), StageRunner(ws, set(force or []))


def data_stages(run: StageRunner, ws: Workspace, plan: S.StudyPlan) -> None:
    """vocab -> corpus -> match -> frequency. The match stage maps one task per caption shard, executed by the flow's
    task runner (threads, processes or Dask); the stage keys do not depend on it."""
    spec = plan.spec
    run("vocab", plan.vocab_key, spec.vocabulary, lambda f: S.build_vocab(ws, plan, f))
    source = spec.corpus.source
    doing = "rendering the synthetic world" if source == "synthetic" else f"ingesting {source}"
    with item_bar(f"corpus: {doing}") as bar:
        run("corpus", plan.corpus_key, source, lambda f: S.build_corpus(ws, plan, f, bar))
    match_shards = lambda fn, jobs: task(fn, name="match-shard").map(jobs).result()  # noqa: E731
    run("match", plan.match_key, spec.matching.method, lambda f: S.build_match(ws, plan, f, map_shards=match_shards))
    run("frequency", plan.frequency_key, spec.vocabulary, lambda f: S.build_frequency(ws, plan, f))


@flow(name="tailstudy-study", log_prints=True)
def study_flow(spec_path: str, workspace: str, force: list[str] | None = None) -> dict:
    """Run (or re-use) every stage of a study; returns the stage records, the results table and the report path."""
    spec, ws, plan, run = open_study(spec_path, workspace, force)

    data_stages(run, ws, plan)
    for cell in plan.cells:
        label = S.cell_id(cell)
        run("curate", plan.subset_keys[label], label, lambda f, c=cell: S.build_subset(ws, plan, c, f))
    S.plan_runs(ws, plan)
    statuses = {}
    for r in plan.runs:
        label = f"{S.cell_id(r.cell)}/{r.model}/s{r.seed}"
        with epoch_bar(f"train {label}", spec.train.epochs) as bar:
            run("train", r.train_key, label, lambda f, r=r, bar=bar: S.build_train(ws, plan, r, f, bar))
        run("evaluate", r.eval_key, label, lambda f, r=r: S.build_evaluate(ws, plan, r, f))
        statuses[r.eval_key] = "completed"
    S.write_study_records(ws, plan, statuses)
    report = run("report", plan.report_key, spec.name, lambda f: S.build_report(ws, plan, f))
    catalog.refresh(ws)
    run_metrics, _ = S.collect_results(ws, plan)
    report_dir = ws.artifact("report", plan.report_key).path
    publish_artifacts(plan, run_metrics, report_dir)
    return {"study": spec.name, "workspace": str(ws.root), "stages": run.records,
            "results": run_metrics.drop(columns=["cell"]).to_dict("records"),
            "report": str(report_dir / "report.html"), "report_status": report["status"]}


def study_flow_with(task_runner: str | None = None):
    """The study flow with a task runner for the tasks it submits or maps (the data stages' per-shard tasks):
    ``None``/``"local"`` is Prefect's thread pool in this process; ``"dask:N"`` a local Dask cluster; ``"tcp://HOST:PORT"``
    an existing Dask cluster (see ``flows/task_runners.py``). Stage keys and artifacts do not depend on the runner."""
    from flows.task_runners import make_task_runner

    return study_flow.with_options(task_runner=make_task_runner(task_runner))
