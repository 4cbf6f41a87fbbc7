"""tailstudy's deployments on a Prefect server, through Prefect's Python API: the work pools they use, the deployments
deploy/prefect.yaml declares (each registered by ``Flow.to_deployment(...).apply()``), and flow runs triggered and
watched. What `tailstudy deploy` and `tailstudy submit` (flows/cli_server.py) do; user errors are InputErrors."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound, ParameterTypeError, SignatureMismatchError
from prefect.schedules import Schedule
from prefect.settings import get_current_settings
from prefect.types.entrypoint import EntrypointType
from prefect.workers.process import ProcessWorker

from tailstudy.errors import InputError
from tailstudy.flows.deployments import ENTRY_FLOWS
from tailstudy.flows.task_runners import parse_task_runner
from tailstudy.paths import DEPLOY_DIR

PREFECT_YAML = DEPLOY_DIR / "prefect.yaml"  # shipped in the wheel too (setup.py's package data)
GPU_TEMPLATE = DEPLOY_DIR / "work-pools" / "kubernetes-gpu.json"
# entry flow kind by the entrypoint prefect.yaml names it with: a module path (tailstudy.flows.deployments.study), so
# that a worker imports the installed package -- a wheel or a checkout alike -- rather than a file of a checkout
ENTRYPOINTS = {f"{flow_.__module__}.{kind}": kind for kind, flow_ in ENTRY_FLOWS.items()}
# what tailstudy deploy reads of a prefect.yaml; anything else is refused, never silently left out
TOP_KEYS = {"name", "prefect-version", "definitions", "deployments"}
DEPLOYMENT_KEYS = {"name", "entrypoint", "description", "tags", "parameters", "schedules", "work_pool", "pull"}
SET_WORKING_DIRECTORY = "prefect.deployments.steps.set_working_directory"


def api_url() -> str:
    url = get_current_settings().api.url
    if not url:
        raise InputError("no Prefect server configured: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api); "
                         "`tailstudy run` runs a study without one")
    return url


def error_line(exc: Exception) -> str:
    """An exception from Prefect or the network, in one line."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


# ---------------------------------------------------------------- prefect.yaml

def read_deployments(path: Path) -> list[dict]:
    """The deployments of a prefect.yaml, each checked for everything registering it reads: keys, entry flow,
    parameters (against the flow's signature), schedules, work pool."""
    if not path.is_file():
        raise InputError(f"{path}: no such prefect.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise InputError(f"{path}: invalid YAML") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a prefect.yaml is a mapping")
    unread = sorted(set(data) - TOP_KEYS)
    if unread:
        raise InputError(f"{path}: {unread[0]}: not read by tailstudy deploy (register the file with `prefect deploy`)")
    found = [d for d in data.get("deployments") or [] if isinstance(d, dict) and d.get("name")]
    if not found:
        raise InputError(f"{path}: no named deployments")
    for deployment in found:
        _check(deployment, f"{path}: deployment {deployment['name']}")
    return found


def _check(deployment: dict, where: str) -> None:
    unread = sorted(set(deployment) - DEPLOYMENT_KEYS)
    if unread:
        raise InputError(f"{where}: {unread[0]}: not read by tailstudy deploy (register it with `prefect deploy`)")
    if deployment.get("entrypoint") not in ENTRYPOINTS:
        raise InputError(f"{where}: entrypoint {deployment.get('entrypoint')!r} is not a tailstudy entry flow "
                         f"({', '.join(ENTRYPOINTS)})")
    try:
        ENTRY_FLOWS[entry_kind(deployment)].validate_parameters(deployment.get("parameters") or {})
    except (ParameterTypeError, SignatureMismatchError) as exc:
        raise InputError(f"{where}: parameters: {str(exc).splitlines()[0]}") from None
    schedules(deployment, where)
    if not isinstance(deployment.get("work_pool"), dict) or not deployment["work_pool"].get("name"):
        raise InputError(f"{where}: work_pool.name is missing")


def entry_kind(deployment: dict) -> str:
    """'tailstudy.flows.deployments.study' -> 'study'."""
    return ENTRYPOINTS[deployment["entrypoint"]]


def schedules(deployment: dict, where: str = "") -> list[Schedule]:
    try:  # prefect.yaml's schedule keys are the fields of Prefect's Schedule (cron, timezone, active, ...)
        return [Schedule(**item) for item in deployment.get("schedules") or []]
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: schedules: {error_line(exc)}") from None


# ---------------------------------------------------------------- work pools and deployments

def ensure_pools(wanted: dict[str, bool], gpu_pool: str) -> dict[str, str]:
    """{pool: create it when missing} -> {pool: 'exists' | 'created' | 'absent'}. `gpu_pool` is a Kubernetes pool with
    deploy/work-pools/kubernetes-gpu.json as its job template; any other is a process pool."""
    status: dict[str, str] = {}
    try:
        with get_client(sync_client=True) as client:
            for name, create in wanted.items():
                try:
                    client.read_work_pool(name)
                    status[name] = "exists"
                    continue
                except ObjectNotFound:
                    pass
                if not create:
                    status[name] = "absent"
                    continue
                kind, template = (("kubernetes", json.loads(GPU_TEMPLATE.read_text())) if name == gpu_pool else
                                  ("process", ProcessWorker.get_default_base_job_template()))
                client.create_work_pool(WorkPoolCreate(name=name, type=kind, base_job_template=template))
                status[name] = "created"
    except Exception as exc:  # connection refused, a bad URL, a server error
        raise InputError(f"cannot reach the Prefect server at {api_url()}: {error_line(exc)}") from None
    return status


class PullSteps:
    """A deployment's pull steps, as given: Prefect's RunnerStorage protocol, through which RunnerDeployment.apply()
    sends them (registering pulls nothing)."""

    def __init__(self, steps: list[dict]):
        self.steps = steps

    @property
    def destination(self) -> Path:
        return Path.cwd()

    @property
    def pull_interval(self) -> None:
        return None

    def set_base_path(self, path: Path) -> None:
        pass

    async def pull_code(self) -> None:
        pass

    def to_pull_step(self) -> list[dict]:
        return self.steps

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, PullSteps) and other.steps == self.steps


def register(deployment: dict, here: Path) -> str:
    """Create or update one deployment of prefect.yaml on the server -> FLOW/DEPLOYMENT. One without pull steps runs
    in `here`, as `prefect deploy` records the directory it runs in: a process worker starts its flow runs there, and
    their default workspace is ./workspace there."""
    pool = deployment["work_pool"]
    runner = ENTRY_FLOWS[entry_kind(deployment)].to_deployment(
        deployment["name"], description=deployment.get("description"), tags=deployment.get("tags"),
        parameters=deployment.get("parameters"), schedules=schedules(deployment), work_pool_name=pool["name"],
        work_queue_name=pool.get("work_queue_name"), job_variables=pool.get("job_variables"),
        entrypoint_type=EntrypointType.MODULE_PATH)
    runner.storage = PullSteps(deployment.get("pull") or [{SET_WORKING_DIRECTORY: {"directory": str(here)}}])
    runner.apply()
    return runner.full_name


# ---------------------------------------------------------------- flow runs

SUBMIT_OPTIONS = {"task_runner": ("--task-runner", ("study", "match")), "dispatch": ("--dispatch", ("study",)),
                  "gpus": ("--gpus", ("train",)), "models": ("--learner", ("train",)),
                  "levels": ("--level", ("train",)), "seeds": ("--seed", ("train",))}


def resolve_deployment(deployment: str) -> tuple[str, str]:
    """'study-gpu' (a name in deploy/prefect.yaml) or 'FLOW/DEPLOYMENT' -> (entry flow kind, FLOW/DEPLOYMENT)."""
    flow_kind = {flow_.name: kind for kind, flow_ in ENTRY_FLOWS.items()}
    if "/" in deployment:
        kind = flow_kind.get(deployment.split("/", 1)[0])
        if kind is None:
            raise InputError(f"--deployment {deployment}: not a tailstudy flow ({', '.join(flow_kind)})")
        return kind, deployment
    entry = next((d for d in read_deployments(PREFECT_YAML) if d["name"] == deployment), None)
    if entry is None:
        raise InputError(f"--deployment {deployment}: no such deployment in deploy/prefect.yaml")
    kind = entry_kind(entry)
    return kind, f"{ENTRY_FLOWS[kind].name}/{deployment}"


def check_submit_params(kind: str, params: dict) -> dict:
    """Each option only where its flow takes it, and valid there."""
    for name, (flag, kinds) in SUBMIT_OPTIONS.items():
        if name in params and kind not in kinds:
            raise InputError(f"{flag}: only for the {' / '.join(kinds)} deployments")
    if "task_runner" in params:
        parse_task_runner(params["task_runner"])
    if "/" not in params.get("dispatch", "/"):
        raise InputError("--dispatch: give FLOW/DEPLOYMENT, e.g. tailstudy-train/train-gpu")
    if params.get("gpus", 0) < 0:
        raise InputError("--gpus: must be 0 or more")
    return params


def trigger(full: str, params: dict, job_variables: dict | None):
    """A flow run of deployment FLOW/DEPLOYMENT, scheduled now -> the flow run (not waited for)."""
    try:
        return run_deployment(full, parameters=params, job_variables=job_variables, timeout=0, tags=["tailstudy"])
    except ObjectNotFound:
        url = api_url()
        raise InputError(f"deployment {full} is not on the server at {url} (run `tailstudy deploy` first)") from None
    except Exception as exc:
        raise InputError(f"cannot submit {full} to {api_url()}: {error_line(exc)}") from None


def wait(flow_run, timeout: float | None):
    """The flow run's final state, or its state now once `timeout` seconds have passed -> (state, final)."""
    started = time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(flow_run.id).state
            if state is not None and state.is_final():
                return state, True
            if timeout is not None and time.monotonic() - started > timeout:
                return state, False
            time.sleep(2)
