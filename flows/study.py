"""The study flow: the study's graph of stage nodes (tailstudy.stages.plan_study) run by the one executor
(flows/executor.py), then the study records, the catalog and Prefect artifacts of its results."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tailstudy.flows.executor import Executor
from tailstudy.flows.task_runners import make_task_runner
from tailstudy import catalog
from tailstudy import stages as S
from tailstudy.spec import StudySpec, load_spec
from tailstudy.preflight import check_study
from tailstudy.store import Workspace
from tailstudy.train import cpu_plan


def _artifact_key(*parts: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:100]


def publish_artifacts(graph: S.StudyGraph, run_metrics, report_dir: Path) -> None:
    """Prefect artifacts: the study's runs table, one table per factor level, and the report."""
    name = graph.spec.name
    cols = ["factor", "level", "learner", "seed", "top1", "rho_acc", "rho_pred", "head_acc", "tail_acc"]
    rows = run_metrics[cols].round(4).to_dict("records")
    create_table_artifact(rows, key=_artifact_key("study", name), description=f"runs of {name}")
    for (factor, level), part in run_metrics.groupby(["factor", "level"], sort=False):
        create_table_artifact(part[cols].round(4).to_dict("records"), key=_artifact_key(name, factor, level),
                              description=f"{name}: {factor} = {level}")
    # report_ui.md inlines its figures as data URIs: the Prefect UI cannot load files from the workspace
    create_markdown_artifact((report_dir / "report_ui.md").read_text() + f"\n\nHTML report: `{report_dir / 'report.html'}`\n",
                             key=_artifact_key("report", name), description="study report")


def progress_bar(node: S.Node):
    """A progress callback for the long stages (each stage says which it has: rendering / ingesting a corpus,
    training); none for the others."""
    return S.stage_of(node).progress(node)


def map_shards(fn, jobs):
    """The match stage's per-shard jobs as mapped tasks, on the flow's task runner (threads, processes or Dask)."""
    return task(fn, name="match-shard").map(jobs).result()


def open_study(spec_path: str, workspace: str, force: list[str] | None, jobs: int = 1, dispatch: str | None = None,
               clean: bool = True, spec: StudySpec | None = None, trains: bool = True):
    """-> (graph, executor) for a flow run; stale temp dirs of killed runs are cleared first, unless `clean` is off
    (a child flow run of a study: its siblings are building in the same workspace). `dispatch` (FLOW/DEPLOYMENT, on
    a Prefect server): training runs become child flow runs of that deployment. `spec`: the spec at `spec_path`, parsed
    by the caller (training children, in processes of their own, read `spec_path`). A top-level flow run (`clean`)
    checks the spec's consequences on this machine first, its training device only where it `trains` here."""
    spec = load_spec(spec_path) if spec is None else spec
    ws = Workspace(workspace)
    if clean:
        check_study(spec, ws.root, str(spec_path), trains_here=trains and dispatch is None)
        ws.clean_stale_temps()
    parallel, threads = cpu_plan(spec.train, jobs)
    torch.set_num_threads(threads)  # this process evaluates (and trains, one run at a time) on its share of the cores
    executor = Executor(ws, set(force or []), jobs=jobs, parallel=parallel, threads=threads, spec_path=str(spec_path),
                        progress=progress_bar, options={"map_shards": map_shards}, dispatch=dispatch)
    return S.plan_study(spec), executor


def finish_study(graph: S.StudyGraph, ws: Workspace) -> dict:
    """Study records, catalog, Prefect artifacts -> the results part of the flow's summary."""
    S.write_study_records(ws, graph, {n.key: "completed" for n in graph.evaluations})
    catalog.refresh(ws)
    run_metrics, _ = S.collect_results(ws, graph.evaluations)
    report_dir = ws.artifact("report", graph.report.key).path
    publish_artifacts(graph, run_metrics, report_dir)
    return {"results": run_metrics.drop(columns=["cell"]).to_dict("records"),
            "report": str(report_dir / "report.html")}


@flow(name="tailstudy-study", log_prints=True)
def study_flow(spec_path: str, workspace: str, force: list[str] | None = None, jobs: int = 1,
               dispatch: str | None = None, spec: StudySpec | None = None) -> dict:
    """Run (or re-use) every node of a study's graph; returns the stage records, the results table and the report.
    `spec`: the spec at `spec_path` where the caller parsed it already (tailstudy run, the entry flows)."""
    graph, executor = open_study(spec_path, workspace, force, jobs, dispatch, spec=spec)
    records = executor.run([graph.report])
    report = next(r for r in records if r["stage"] == "report")
    return {"study": graph.spec.name, "workspace": str(executor.ws.root), "stages": records,
            **finish_study(graph, executor.ws), "report_status": report["status"]}


def study_flow_with(task_runner: str | None = None):
    """The study flow with a task runner for the tasks it maps (the match stage's per-shard tasks): ``None``/``"local"``
    is Prefect's thread pool in this process; ``"dask:N"`` a local Dask cluster; ``"tcp://HOST:PORT"`` an existing
    Dask cluster (see ``flows/task_runners.py``). Stage keys and artifacts do not depend on the runner."""
    return study_flow.with_options(task_runner=make_task_runner(task_runner))
