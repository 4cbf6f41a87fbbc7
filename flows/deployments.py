"""Entry points of deploy/prefect.yaml: a whole study, its data stages alone, and training runs alone.

Every entry flow takes the study spec either as a path that exists where the flow runs (``spec``) or as the spec's
YAML text (``spec_yaml``: what ``tailstudy submit`` sends, so that a remote worker needs no copy of the file; it is
kept as ``WORKSPACE/specs/<name>-<digest>.yaml``); either is parsed once, here, and the parsed spec passed on.
``workspace`` defaults to ``$TAILSTUDY_WORKSPACE`` on the worker, else ``./workspace`` under the flow's working
directory (for the process pool, the directory `tailstudy deploy` ran in; /opt/tailstudy in the image). The entry flow
then runs the work as a subflow whose task runner is chosen by ``task_runner`` and whose Prefect results (the stage
cache) live in ``WORKSPACE/.prefect/results``, as with ``tailstudy run``: the same workspace reuses the same artifacts
whichever way a study was started. deploy/prefect.yaml names these flows by module path
(``tailstudy.flows.deployments.study``): a worker runs them from the installed package, a wheel or a checkout.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from prefect import flow

from tailstudy.flows.study import open_study, study_flow_with
from tailstudy.flows.task_runners import make_task_runner, parse_task_runner
from tailstudy.flows.torchrun import check_gpus
from tailstudy import catalog
from tailstudy import stages as S
from tailstudy.errors import InputError
from tailstudy.spec import StudySpec, default_spec_path, load_spec, parse_spec
from tailstudy.store import Workspace, atomic_write_text, workspace_path


# ---------------------------------------------------------------- shared by the entry flows

def resolve_workspace(workspace: str | None) -> Workspace:
    return Workspace(workspace_path(workspace))


def materialise_spec(ws: Workspace, spec: str | None, spec_yaml: str | None) -> tuple[Path, StudySpec]:
    """The spec file the stages read (`spec` as given, or `spec_yaml` stored content-addressed in the workspace) and
    the spec parsed, once."""
    if spec and spec_yaml:
        raise InputError("give either spec (a path on the worker) or spec_yaml (the spec's text), not both")
    if spec_yaml is not None:
        try:
            data = yaml.safe_load(spec_yaml)
        except yaml.YAMLError:
            raise InputError("spec_yaml: invalid YAML") from None
        study = parse_spec(data, "spec_yaml")
        digest = hashlib.sha256(spec_yaml.encode("utf-8")).hexdigest()[:16]
        path = ws.root / "specs" / f"{study.name}-{digest}.yaml"
        if not path.is_file():
            atomic_write_text(path, spec_yaml)
        return path, study
    path = Path(spec).expanduser().resolve() if spec else default_spec_path()
    return path, load_spec(path)  # a missing or bad spec fails here, in one line


def in_workspace(work_flow, ws: Workspace, task_runner: str | None = None):
    """The work flow with its Prefect results (the stage cache) in ``WORKSPACE/.prefect/results``, where
    ``tailstudy run`` keeps them too, and with the task runner named by ``task_runner`` (None: the flow's own)."""
    results = ws.root / ".prefect" / "results"
    results.mkdir(parents=True, exist_ok=True)
    options = {"result_storage": results}
    if task_runner is not None:
        options["task_runner"] = make_task_runner(task_runner)
    return work_flow.with_options(**options)


def log_stages(records: list[dict]) -> dict[str, int]:
    for rec in records:
        print(f"{rec['status']:<7} {rec['stage']:<10} {rec['key']}  {rec['label']}")
    counts = {s: sum(1 for r in records if r["status"] == s) for s in ("ran", "reused", "shared")}
    print(f"stages: {counts['ran']} ran, {counts['reused']} reused, {counts['shared']} shared")
    return counts


# ---------------------------------------------------------------- work flows (run as subflows of the entries)

@flow(name="tailstudy-data-stages", log_prints=True)
def data_stages_flow(spec_path: str, workspace: str, force: list[str] | None = None,
                     spec: StudySpec | None = None) -> dict:
    """The data stages of a study (vocabulary, corpus, match, frequency) and the catalog over them."""
    graph, executor = open_study(spec_path, workspace, force, spec=spec, trains=False)
    records = executor.run([graph.node("frequency")])
    catalog.refresh(executor.ws)
    imbalance = executor.ws.artifact("frequency", graph.key("frequency")).manifest().get("imbalance", {})
    return {"study": graph.spec.name, "workspace": str(executor.ws.root), "stages": records, "imbalance": imbalance}


def select_runs(graph: S.StudyGraph, learners: list[str] | None, levels: list[str] | None,
                seeds: list[int] | None) -> list[S.Node]:
    """Evaluate nodes of the study filtered by learner, factor level ('imbalance=natural' or just 'natural') and
    seed."""
    chosen = [n for n in graph.evaluations
              if (not learners or n.config["learner"] in learners)
              and (not levels or S.cell_id(n.config["cell"]) in levels or n.config["cell"].level in levels)
              and (not seeds or n.config["seed"] in seeds)]
    if not chosen:
        raise InputError(f"no training run of study {graph.spec.name!r} matches models={learners}, levels={levels}, "
                         f"seeds={seeds}")
    return chosen


@flow(name="tailstudy-train-runs", log_prints=True)
def train_runs_flow(spec_path: str, workspace: str, models: list[str] | None = None,
                    levels: list[str] | None = None, seeds: list[int] | None = None, gpus: int = 0,
                    force: list[str] | None = None, train_keys: list[str] | None = None,
                    spec: StudySpec | None = None) -> dict:
    """Train and evaluate the selected runs of a study (or train, only, the runs with `train_keys`: what a study
    dispatches); their data stages and subsets are reused (or built)."""
    check_gpus(gpus)
    graph, executor = open_study(spec_path, workspace, force, clean=not train_keys, spec=spec)
    executor.ddp = gpus
    if train_keys:
        executor.run(graph.of("curate"))  # train keys hash the subsets
        S.resolve_all(graph.nodes, executor.ws)
        targets = list({n.key: n for n in graph.of("train") if n.key in train_keys}.values())
        if len(targets) != len(set(train_keys)):
            raise InputError(f"train_keys: not all of {train_keys} are training runs of study {graph.spec.name!r}")
    else:
        targets = select_runs(graph, models, levels, seeds)
    records = executor.run(targets)
    catalog.refresh(executor.ws)
    return {"study": graph.spec.name, "workspace": str(executor.ws.root), "stages": records}


# ---------------------------------------------------------------- entry flows (deploy/prefect.yaml)

@flow(name="tailstudy-run-study", log_prints=True)
def study(spec: str | None = None, spec_yaml: str | None = None, workspace: str | None = None,
          force: list[str] | None = None, task_runner: str = "local", jobs: int = 1,
          dispatch: str | None = None) -> dict:
    """Run (or reuse) every stage of a study: data, match, frequency, curate, train, evaluate, report. `dispatch`
    (FLOW/DEPLOYMENT, e.g. tailstudy-train/train-gpu): each training run becomes a child flow run of that
    deployment, so its work pool (concurrency = its GPUs) runs them side by side; this flow waits for them, then
    evaluates and reports. The workspace must be shared with that pool's workers (same path)."""
    ws = resolve_workspace(workspace)
    force = S.check_force(force)
    parse_task_runner(task_runner)
    path, parsed = materialise_spec(ws, spec, spec_yaml)
    print(f"study {path} in {ws.root} (task runner: {task_runner}, dispatch: {dispatch or 'none'})")
    summary = in_workspace(study_flow_with(task_runner), ws)(str(path), str(ws.root), force, jobs, dispatch,
                                                             spec=parsed)
    counts = log_stages(summary["stages"])
    print(f"report: {summary['report']}")
    return {"study": summary["study"], "workspace": summary["workspace"], "report": summary["report"],
            "stages": counts, "runs": len(summary["results"])}


@flow(name="tailstudy-match", log_prints=True)
def match(spec: str | None = None, spec_yaml: str | None = None, workspace: str | None = None,
          force: list[str] | None = None, task_runner: str = "local") -> dict:
    """A study's data stages alone (vocabulary, corpus, match, frequency), e.g. on CPU workers or a Dask cluster,
    ahead of training on GPU workers."""
    ws = resolve_workspace(workspace)
    force = S.check_force(force)
    path, parsed = materialise_spec(ws, spec, spec_yaml)
    parse_task_runner(task_runner)
    print(f"data stages of {path} in {ws.root} (task runner: {task_runner})")
    summary = in_workspace(data_stages_flow, ws, task_runner)(str(path), str(ws.root), force, spec=parsed)
    log_stages(summary["stages"])
    return {"study": summary["study"], "workspace": summary["workspace"], "imbalance": summary["imbalance"]}


@flow(name="tailstudy-train", log_prints=True)
def train(spec: str | None = None, spec_yaml: str | None = None, workspace: str | None = None,
          models: list[str] | None = None, levels: list[str] | None = None, seeds: list[int] | None = None,
          gpus: int = 0, force: list[str] | None = None, train_keys: list[str] | None = None) -> dict:
    """Training runs of a study (all, or those of the given learners / factor levels / seeds), then their evaluation;
    or the training runs with `train_keys` alone (what a study with `dispatch` sends).
    gpus: 0 = the spec's train.device; 1 = one GPU, required; N > 1 = one run over N local GPUs through torchrun."""
    ws = resolve_workspace(workspace)
    force = S.check_force(force)
    path, parsed = materialise_spec(ws, spec, spec_yaml)
    print(f"training runs of {path} in {ws.root} (gpus: {gpus})")
    summary = in_workspace(train_runs_flow, ws)(str(path), str(ws.root), models, levels, seeds, gpus, force,
                                                train_keys, spec=parsed)
    counts = log_stages(summary["stages"])
    return {"study": summary["study"], "workspace": summary["workspace"], "stages": counts}


ENTRY_FLOWS = {"study": study, "match": match, "train": train}
