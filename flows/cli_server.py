"""A Prefect server (PREFECT_API_URL): `tailstudy deploy` registers deploy/prefect.yaml's deployments and their work
pools, `tailstudy submit` triggers a flow run of one. The work itself is in flows/server.py."""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional

import typer

from tailstudy.flows.cli_common import fail, out
from tailstudy.spec import default_spec_path, load_spec
from tailstudy.stages import check_force

PANEL = "Prefect server"
app = typer.Typer()

PROCESS_POOL = "tailstudy-process"
GPU_POOL = "tailstudy-gpu"


@app.command(rich_help_panel=PANEL)
def deploy(
    names: List[str] = typer.Option([], "--name", "-n", metavar="<name>",
                                    help="Deploy only these deployments of deploy/prefect.yaml (repeatable; default: "
                                         "all whose work pool exists)."),
    gpu: bool = typer.Option(False, "--gpu", help=f"Also create the Kubernetes GPU pool {GPU_POOL!r} "
                                                  "(deploy/work-pools/kubernetes-gpu.json) and deploy to it."),
    prefect_file: Optional[Path] = typer.Option(None, "--prefect-file", help="Default: deploy/prefect.yaml."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also print each deployment's work pool and pull "
                                                                "steps."),
) -> None:
    """Register tailstudy's deployments on the Prefect server at PREFECT_API_URL (creating missing work pools).

    Deployments without pull steps (the process pool's) run in the directory this command runs in."""
    # Prefect's client and the entry flows (torch): seconds of imports that only the server commands need
    from tailstudy.flows import server

    url = server.api_url()
    path = (prefect_file or server.PREFECT_YAML).resolve()
    deployments = server.read_deployments(path)
    unknown = [n for n in names if n not in {d["name"] for d in deployments}]
    if unknown:
        fail(f"--name {unknown[0]}: no such deployment in {path} (known: {', '.join(d['name'] for d in deployments)})")
    pools = server.ensure_pools({PROCESS_POOL: True, GPU_POOL: gpu}, GPU_POOL)
    for pool, state in pools.items():
        if state != "absent":
            out.print(f"  work pool {pool}: {state}", highlight=False)
    pool_of = {d["name"]: d["work_pool"]["name"] for d in deployments}
    chosen = list(names) or [d["name"] for d in deployments if pools.get(pool_of[d["name"]]) in ("exists", "created")]
    missing = [n for n in chosen if pools.get(pool_of[n]) not in ("exists", "created")]
    if missing:
        fail(f"deployment {missing[0]} needs work pool {pool_of[missing[0]]!r}, which does not exist "
             f"(--gpu creates {GPU_POOL!r})")
    if not chosen:
        fail("nothing to deploy")
    here = Path.cwd()
    for deployment in (d for d in deployments if d["name"] in chosen):
        try:
            full = server.register(deployment, here)
        except Exception as exc:  # the server refused it (a bad job variable, a schema mismatch, ...): not our input
            fail(f"deployment {deployment['name']}: {server.error_line(exc)}", 1)
        out.print(f"  deployed {full}", highlight=False)
        if verbose:
            out.print(f"    work pool {pool_of[deployment['name']]}, pull steps "
                      f"{deployment.get('pull') or f'(runs in {here})'}", highlight=False)
    out.print(f"{len(chosen)} deployments on {url}; start a worker with "
              f"`prefect worker start --pool {PROCESS_POOL}`", highlight=False)


@app.command(rich_help_panel=PANEL)
def submit(
    spec: Optional[Path] = typer.Argument(None, help="Study spec YAML, read here and sent as text "
                                                     "(default: the embedded default study)."),
    deployment: str = typer.Option("study", "--deployment", "-d", help="A deployment of deploy/prefect.yaml "
                                   "(study, study-gpu, match, match-dask, train, train-gpu, ...) or FLOW/DEPLOYMENT."),
    workspace: Optional[str] = typer.Option(None, "--workspace", "-w", help="Workspace path as the worker sees it "
                                            "(default: the worker's $TAILSTUDY_WORKSPACE, else ./workspace)."),
    force: List[str] = typer.Option([], "--force", metavar="<stage>",
                                    help="Re-run this stage even if cached (repeatable; 'all')."),
    task_runner: Optional[str] = typer.Option(None, "--task-runner", help="study/match: local, threads[:N], "
                                              "processes[:N], dask[:N] or tcp://HOST:PORT of a Dask scheduler."),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="train: GPUs per run (sets the flow parameter and the "
                                                            "work pool's `gpus` job variable)."),
    learners: List[str] = typer.Option([], "--learner", "--model", metavar="<learner>",
                                       help="train: only this learner (repeatable; --model: its old name)."),
    levels: List[str] = typer.Option([], "--level", metavar="<level>",
                                     help="train: only this factor level (repeatable)."),
    seeds: List[int] = typer.Option([], "--seed", metavar="<seed>", help="train: only this seed (repeatable)."),
    dispatch: Optional[str] = typer.Option(None, "--dispatch", help="study: FLOW/DEPLOYMENT that trains each run as "
                                           "a child flow run (study-gpu: tailstudy-train/train-gpu)."),
    watch: bool = typer.Option(False, "--watch", help="Wait for the flow run to end; exit 1 unless it completed."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="With --watch: give up after this many seconds."),
) -> None:
    """Trigger a run of a deployed flow on the Prefect server at PREFECT_API_URL (see `tailstudy deploy`)."""
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        fail(f"--timeout {timeout}: must be a positive number of seconds")
    from tailstudy.flows import server  # Prefect's client and the entry flows, as for deploy

    server.api_url()
    spec_path = spec or default_spec_path()
    load_spec(spec_path)  # a bad spec fails here, not on the worker
    check_force(force)
    kind, full = server.resolve_deployment(deployment)
    # "models": the train flow's parameter keeps its old name, which deployments already registered take
    params = {"spec_yaml": Path(spec_path).read_text(encoding="utf-8"), "workspace": workspace,
              "force": list(force) or None, "task_runner": task_runner, "dispatch": dispatch, "gpus": gpus,
              "models": list(learners) or None, "levels": list(levels) or None, "seeds": list(seeds) or None}
    params = server.check_submit_params(kind, {k: v for k, v in params.items() if v is not None})
    flow_run = server.trigger(full, params, {"gpus": gpus} if gpus is not None else None)
    out.print(f"submitted {full}: flow run {flow_run.name} ({flow_run.id})", highlight=False)
    if not watch:
        return
    state, final = server.wait(flow_run, timeout)
    if not final:
        fail(f"flow run {flow_run.name}: still {state.name if state else 'pending'} after {timeout:g} s", 1)
    out.print(f"flow run {flow_run.name}: {state.name}", highlight=False)
    if not state.is_completed():
        fail(f"flow run {flow_run.name} ended {state.name}: {state.message or ''}".rstrip(": "), 1)
