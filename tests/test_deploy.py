"""Deploy and scale out (deploy/, flows/deployments.py, `tailstudy deploy` / `tailstudy submit`).

The server tests start a real `prefect server start` on 127.0.0.1 (a free port, a temporary PREFECT_HOME), register
deploy/prefect.yaml's study deployment with `tailstudy deploy` from a folder outside the checkout (which creates the
process work pool), submit a tiny study, and run `prefect worker start --run-once`. Every process they start is
stopped by PID, with all its descendants, also when a test fails. Every HTTP client they start is pointed at a closed
port on 127.0.0.1 as its proxy (127.0.0.1 itself excepted), so nothing they run reaches an address other than 127.0.0.1
(Prefect's server would otherwise try to fetch its collections registry from the internet when a work pool is
created).

The static tests check deploy/ without any engine: deploy/prefect.yaml against Prefect's own model and the flows'
signatures, the Kubernetes manifests and the GPU job template against the Kubernetes API schemas (kubernetes-validate,
offline), the compose file against the Compose Specification schema (check-jsonschema's vendored copy) and with
`docker compose config` wherever a Compose v2 CLI is installed, and the Dockerfile with BuildKit's own parser.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from unittest import mock
from uuid import UUID

import pytest
import yaml

from tests.conftest import REPO, TINY_SPEC, VENV_BIN

DEPLOY = REPO / "deploy"
PREFECT_YAML = DEPLOY / "prefect.yaml"
GPU_TEMPLATE = DEPLOY / "work-pools" / "kubernetes-gpu.json"
K8S_VERSION = "1.33.0"
BLACKHOLE = "http://127.0.0.1:9"  # a closed port: any proxied request fails at once, on this machine
UUID_RE = re.compile(r"\(([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\)")


# ---------------------------------------------------------------- processes, stopped by PID

def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (with the PID, an identity that survives PID reuse); None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


class Processes:
    """Starts commands in their own session with output to a log file; stops each with its process tree, by PID."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, args: list, env: dict, name: str, cwd: Path = REPO) -> tuple[subprocess.Popen, Path]:
        log = self.logs / f"{len(self.started):02d}-{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([str(a) for a in args], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.started.append((proc, log))
        return proc, log

    def run(self, args: list, env: dict, name: str, timeout: float, cwd: Path = REPO) -> tuple[int, str]:
        proc, log = self.start(args, env, name, cwd)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            raise AssertionError(f"{name} ran past {timeout} s:\n{tail(log)}") from None
        return code, log.read_text(errors="replace")

    @staticmethod
    def stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
        """SIGTERM to the process and every descendant, SIGKILL to whatever of them outlives `grace` seconds."""
        tree = {pid: _start_time(pid) for pid in [proc.pid, *descendants(proc.pid)]}

        def alive() -> list[int]:
            return [pid for pid, started in tree.items() if started is not None and _start_time(pid) == started]

        for pid in alive():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while alive() and time.monotonic() < deadline:
            proc.poll()  # reap our own child
            for pid in alive():  # children started during shutdown join the tree
                tree.update({child: _start_time(child) for child in descendants(pid) if child not in tree})
            time.sleep(0.2)
        for pid in alive():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
            pass

    def stop_all(self) -> None:
        for proc, _ in reversed(self.started):
            self.stop(proc)


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(home: Path, api_url: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "TAILSTUDY_")) and k.lower() not in ("http_proxy", "https_proxy",
                                                                                   "all_proxy", "no_proxy")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               PREFECT_CLI_PROMPT="false", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1",
               PYTHONUNBUFFERED="1", COLUMNS="200")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = BLACKHOLE
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def micro_spec() -> str:
    """conftest's TINY_SPEC world, one subset and one 1-epoch SL run: every stage, in seconds."""
    data = yaml.safe_load(TINY_SPEC)
    data["factors"] = {"imbalance": ["natural"]}
    data["learners"] = ["sl"]
    data["train"]["epochs"] = 1
    return yaml.safe_dump(data, sort_keys=False)


# ---------------------------------------------------------------- a Prefect server, a deployed study, a worker

class Server:
    def __init__(self, url: str, home: Path, procs: Processes, root: Path):
        self.url, self.home, self.procs, self.root = url, home, procs, root
        self.env = subprocess_env(home, url)

    def run(self, args: list, name: str, timeout: float = 300, cwd: Path = REPO) -> tuple[int, str]:
        return self.procs.run(args, self.env, name, timeout, cwd)

    @contextlib.contextmanager
    def client(self):
        """A synchronous Prefect client on this server, in this process (127.0.0.1 never through a proxy)."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        local = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        with mock.patch.dict(os.environ, local), temporary_settings(updates={PREFECT_API_URL: self.url}):
            with get_client(sync_client=True) as client:
                yield client


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    home = root / "prefect-home"
    logs = root / "logs"
    home.mkdir()
    logs.mkdir()
    procs = Processes(logs)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    try:
        proc, log = procs.start([VENV_BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", port,
                                 "--no-ui", "--analytics-off"], subprocess_env(home), "server")
        deadline = time.monotonic() + 180
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"prefect server exited with {proc.returncode}:\n{tail(log)}")
            try:
                if opener.open(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"prefect server not healthy after 180 s:\n{tail(log)}")
            time.sleep(0.5)
        yield Server(url, home, procs, root)
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def runs(server):
    """The tiny study deployed with deploy/prefect.yaml and run by a process worker, twice: with the default task
    runner and with a 2-process local Dask cluster."""
    spec = server.root / "micro.yaml"
    spec.write_text(micro_spec())
    # outside the checkout: module-path entrypoints need none, and the deployment runs where it was registered
    code, out = server.run([VENV_BIN / "tailstudy", "deploy", "--name", "study"], "tailstudy-deploy-study",
                           cwd=server.root)
    assert code == 0 and "work pool tailstudy-process: created" in out, out
    assert "  deployed tailstudy-run-study/study" in out, out
    ids = {}
    for label, extra in (("default", []), ("dask", ["--task-runner", "dask:2"])):
        code, out = server.run([VENV_BIN / "tailstudy", "submit", spec, "-w", server.root / f"ws-{label}", *extra],
                               f"submit-{label}")
        assert code == 0, out
        ids[label] = UUID(UUID_RE.search(out).group(1))
    code, worker_log = server.run([VENV_BIN / "prefect", "worker", "start", "--pool", "tailstudy-process",
                                   "--run-once", "--limit", "2"], "worker", timeout=600)
    assert code == 0, worker_log[-5000:]
    return {"spec": spec, "ids": ids, "worker_log": worker_log,
            "ws": {label: server.root / f"ws-{label}" for label in ids}}


def stage_dirs(ws: Path, stage: str) -> list[Path]:
    return sorted(p for p in (ws / stage).iterdir() if (p / "manifest.json").is_file())


@pytest.mark.slow
def test_deployed_study_completes_on_a_process_worker(server, runs):
    from tailstudy import catalog
    from tailstudy.store import Workspace

    with server.client() as client:
        flow_run = client.read_flow_run(runs["ids"]["default"])
        deployment = client.read_deployment_by_name("tailstudy-run-study/study")
    assert flow_run.state.is_completed(), (flow_run.state, runs["worker_log"][-3000:])
    # the process-pool deployment runs in the folder `tailstudy deploy` ran in, the flow from the installed package
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(server.root)}}]
    assert deployment.entrypoint == "tailstudy.flows.deployments.study"

    ws = runs["ws"]["default"]
    for stage in ("vocab", "corpus", "match", "frequency", "curate", "train", "evaluate", "report"):
        assert len(stage_dirs(ws, stage)) == 1, stage
    assert (stage_dirs(ws, "report")[0] / "report.html").is_file()
    assert list((ws / "specs").glob("tiny-*.yaml"))  # the submitted spec text, kept with the artifacts
    assert any((ws / ".prefect" / "results").iterdir())  # the stage cache lives in the workspace
    assert (ws / "catalog.duckdb").is_file()
    metrics = catalog.query(Workspace(ws), "select learner, level, top1 from run_metrics")
    assert metrics[["learner", "level"]].values.tolist() == [["sl", "natural"]]
    assert int(catalog.query(Workspace(ws), "select count(*) as n from matches").n[0]) > 100
    assert int(catalog.query(Workspace(ws), "select count(*) as n from concept_freq").n[0]) > 0


@pytest.mark.slow
def test_match_stage_on_a_local_dask_cluster_is_byte_identical(server, runs):
    """The study flow's task-runner option (`--task-runner dask:2`): the match stage's per-shard tasks run on a
    LocalCluster of 2 worker processes listening on 127.0.0.1, and its matches equal the default runner's, byte for
    byte."""
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterParentFlowRunId, LogFilter,
                                                 LogFilterFlowRunId)

    entry = runs["ids"]["dask"]
    with server.client() as client:
        flow_run = client.read_flow_run(entry)
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[entry])))
        log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[entry, *(r.id for r in subflows)]))
        logs = []
        while page := client.read_logs(log_filter, limit=200, offset=len(logs)):
            logs += page
    assert flow_run.state.is_completed(), (flow_run.state, runs["worker_log"][-3000:])
    assert flow_run.parameters["task_runner"] == "dask:2"

    default, dask = (stage_dirs(runs["ws"][k], "match") for k in ("default", "dask"))
    assert [p.name for p in default] == [p.name for p in dask]  # same stage key
    files = sorted(p.relative_to(default[0]) for p in default[0].rglob("*.parquet"))
    assert files and files == sorted(p.relative_to(dask[0]) for p in dask[0].rglob("*.parquet"))
    for rel in files:
        assert (default[0] / rel).read_bytes() == (dask[0] / rel).read_bytes(), rel

    # the cluster starts at the first mapped task (a match shard) and the runner logs where it is
    cluster = [log.message for log in logs if log.message.startswith("Dask cluster ")]
    assert cluster, [log.message for log in logs]
    for message in cluster:
        addresses = re.findall(r"tcp://[0-9.]+:\d+", message)
        assert "2 workers" in message and len(addresses) == 3, message
        assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), message


SHARD_SCRIPT = r'''
import json, os, sys
from pathlib import Path

def main(spec_path, ws_path, out_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from prefect import flow, task, unmapped
    from tailstudy.flows.task_runners import make_task_runner
    from tailstudy import stages as S
    from tailstudy.matching import make_matcher, matches_table
    from tailstudy.spec import load_spec
    from tailstudy.store import Workspace, write_parquet

    plan = S.plan_study(load_spec(spec_path))
    captions = str(Workspace(ws_path).artifact("corpus", plan.key("corpus")).path / "captions.parquet")

    @task
    def match_shard(path, start, stop, vocab, method):
        try:
            from distributed import get_worker
            where = get_worker().address
        except (ImportError, ValueError):
            where = "local"
        table = pq.read_table(path, columns=["sample_id", "caption"]).slice(start, stop - start)
        found = matches_table(table.column("sample_id").to_pylist(), table.column("caption").to_pylist(),
                              make_matcher(method, vocab))
        return found, os.getpid(), where

    @flow
    def per_shard(shards):
        total = pq.read_metadata(captions).num_rows
        starts = [i * total // shards for i in range(shards)]
        stops = [(i + 1) * total // shards for i in range(shards)]
        futures = match_shard.map(unmapped(captions), starts, stops, unmapped(plan.node("vocab").config["vocab"]),
                                  unmapped(plan.spec.matching.method))
        done = [f.result() for f in futures]
        return pa.concat_tables([d[0] for d in done]).combine_chunks(), sorted({(d[1], d[2]) for d in done})

    report = {}
    for runner in ("threads:2", "dask:2"):
        table, where = per_shard.with_options(task_runner=make_task_runner(runner))(4)
        write_parquet(table, Path(out_dir) / (runner.split(":")[0] + ".parquet"))
        report[runner] = where
    print("RESULT " + json.dumps(report))

if __name__ == "__main__":
    main(*sys.argv[1:])
'''


@pytest.mark.slow
def test_per_shard_matching_on_a_local_dask_cluster_equals_the_match_stage(server, runs):
    """The Dask task runner itself, on mapped per-shard match tasks: a LocalCluster of 2 processes on 127.0.0.1,
    results byte-identical to Prefect's thread pool and equal, row for row, to the tiny study's match artifact."""
    import pyarrow.parquet as pq

    script = server.root / "per_shard.py"
    script.write_text(SHARD_SCRIPT)
    out = server.root / "per-shard"
    out.mkdir()
    code, log = server.run([sys.executable, script, runs["spec"], runs["ws"]["default"], out], "per-shard",
                           timeout=600)
    assert code == 0, log[-5000:]
    where = json.loads(next(line for line in log.splitlines() if line.startswith("RESULT "))[7:])
    dask_workers = {address for _, address in where["dask:2"]}
    assert len({pid for pid, _ in where["dask:2"]}) == 2 and len(dask_workers) == 2, where
    assert all(a.startswith("tcp://127.0.0.1:") for a in dask_workers), where
    assert (out / "dask.parquet").read_bytes() == (out / "threads.parquet").read_bytes()

    stage = pq.read_table(stage_dirs(runs["ws"]["default"], "match")[0] / "matches")
    ours = pq.read_table(out / "dask.parquet")
    keys = [("sample_id", "ascending"), ("concept_id", "ascending")]
    assert ours.num_rows == stage.num_rows > 0
    assert ours.sort_by(keys).equals(stage.select(ours.column_names).sort_by(keys))


@pytest.mark.slow
def test_tailstudy_deploy_registers_pools_and_every_deployment(server, runs):
    code, out = server.run([VENV_BIN / "tailstudy", "deploy", "--gpu"], "tailstudy-deploy")
    assert code == 0, out
    names = [d["name"] for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]]
    assert out.count("  deployed ") == len(names) == 7, out
    with server.client() as client:
        gpu_pool = client.read_work_pool("tailstudy-gpu")
        weekly = client.read_deployment_by_name("tailstudy-run-study/study-weekly")
        train_gpu = client.read_deployment_by_name("tailstudy-train/train-gpu")
        match_dask = client.read_deployment_by_name("tailstudy-match/match-dask")
    assert gpu_pool.type == "kubernetes"
    assert gpu_pool.base_job_template == json.loads(GPU_TEMPLATE.read_text())
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in weekly.schedules] == [("0 3 * * 1", "UTC", False)]
    assert weekly.parameters == {"task_runner": "local"} and weekly.work_pool_name == "tailstudy-process"
    assert weekly.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    assert train_gpu.job_variables == {"gpus": 1} and train_gpu.parameters == {"gpus": 1}
    assert match_dask.job_variables == {"gpus": 0, "node_selector": {}}
    assert match_dask.parameters == {"task_runner": "tcp://tailstudy-dask-scheduler:8786"}
    for deployment in (train_gpu, match_dask):
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "/opt/tailstudy"}}]
    assert train_gpu.entrypoint == "tailstudy.flows.deployments.train" and "GPU nodes" in train_gpu.description
    again_code, again = server.run([VENV_BIN / "tailstudy", "deploy", "--gpu"], "tailstudy-deploy-again")
    assert again_code == 0 and "work pool tailstudy-gpu: exists" in again, again  # an update, not a second copy
    with server.client() as client:
        assert [(s.schedule.cron, s.active) for s in
                client.read_deployment_by_name("tailstudy-run-study/study-weekly").schedules] == [("0 3 * * 1", False)]

    # what tailstudy deploy does not read is refused in one line, before anything is registered
    custom = server.root / "custom.yaml"
    for extra, needle in (("    entrypoint: flows/deployments.py:study\n", "is not a tailstudy entry flow"),
                          ("    entrypoint: tailstudy.flows.deployments.study\n    build: []\n", "build: not read"),
                          ("    entrypoint: tailstudy.flows.deployments.train\n    parameters: {gpu: 1}\n",
                           "parameters")):
        custom.write_text("deployments:\n  - name: custom\n" + extra + "    work_pool: {name: tailstudy-process}\n")
        code, out = server.run([VENV_BIN / "tailstudy", "deploy", "--prefect-file", custom], "deploy-custom")
        lines = [line for line in out.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and needle in lines[0], out

    # user errors are one line and exit 2
    code, out = server.run([VENV_BIN / "tailstudy", "submit", runs["spec"], "--deployment", "nope"], "submit-nope")
    assert code == 2 and "no such deployment" in out and len(out.strip().splitlines()) == 1, out
    code, out = server.run([VENV_BIN / "tailstudy", "submit", runs["spec"], "-d", "train", "--task-runner", "dask"],
                           "submit-train-dask")
    assert code == 2 and "--task-runner" in out, out


STANDIN_YAML = """\
name: tailstudy-standin
prefect-version: 3.9.1
deployments:
  - name: train-standin
    entrypoint: tailstudy.flows.deployments.train
    parameters: {gpus: 0}
    work_pool: {name: gpu-standin, work_queue_name: default}
  - name: study-dispatch
    entrypoint: tailstudy.flows.deployments.study
    parameters: {task_runner: local, dispatch: tailstudy-train/train-standin}
    work_pool: {name: tailstudy-process, work_queue_name: default}
"""


def flow_run_ancestors(client, flow_run) -> list:
    """The ids of the flow runs above `flow_run` (child flow runs hang off a task run of their parent)."""
    found = []
    while flow_run.parent_task_run_id is not None:
        flow_run = client.read_flow_run(client.read_task_run(flow_run.parent_task_run_id).flow_run_id)
        found.append(flow_run.id)
    return found


def most_at_once(spans: list[tuple]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


@pytest.mark.slow
def test_a_study_dispatches_its_training_runs_as_child_flow_runs_on_a_limited_pool(server, runs):
    """study-gpu's mechanism with a process pool of concurrency 2 standing in for the GPU pool: one submitted study
    trains every run as a child flow run of the train deployment, at most 2 at a time, then evaluates and reports."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from tailstudy import catalog
    from tailstudy.store import Workspace

    spec, ws = server.root / "dispatch.yaml", server.root / "ws-dispatch"
    spec.write_text(TINY_SPEC.replace("epochs: 2", "epochs: 1"))
    (server.root / "standin.yaml").write_text(STANDIN_YAML)
    for args, name in ((["work-pool", "create", "gpu-standin", "--type", "process"], "standin-pool"),
                       (["work-pool", "set-concurrency-limit", "gpu-standin", "2"], "standin-limit"),
                       (["deploy", "--prefect-file", server.root / "standin.yaml", "--all"], "standin-deploy")):
        code, out = server.run([VENV_BIN / "prefect", *args], name)
        assert code == 0, out
    code, out = server.run([VENV_BIN / "tailstudy", "submit", spec, "-d", "tailstudy-run-study/study-dispatch",
                            "-w", ws], "submit-dispatch")
    assert code == 0, out
    parent_id = UUID(UUID_RE.search(out).group(1))
    env = {**server.env, "PREFECT_WORKER_QUERY_SECONDS": "2"}
    gpu_worker, gpu_log = server.procs.start([VENV_BIN / "prefect", "worker", "start", "--pool", "gpu-standin"], env,
                                             "standin-worker")
    driver, driver_log = server.procs.start([VENV_BIN / "prefect", "worker", "start", "--pool", "tailstudy-process",
                                             "--run-once"], env, "driver-worker")
    try:
        with server.client() as client:
            deadline = time.monotonic() + 1200
            while not (parent := client.read_flow_run(parent_id)).state.is_final():
                assert time.monotonic() < deadline, f"study still {parent.state.name}:\n{tail(driver_log)}"
                time.sleep(3)
            assert parent.state.is_completed(), (parent.state, tail(driver_log, 80), tail(gpu_log, 80))
            train = client.read_deployment_by_name("tailstudy-train/train-standin")
            children = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[train.id])))
            ancestry = [flow_run_ancestors(client, c) for c in children]
    finally:
        server.procs.stop(gpu_worker)
        server.procs.stop(driver)
    trained = stage_dirs(ws, "train")
    assert len(children) == len(trained) == 5  # one child per distinct training run (shared runs train once)
    assert all(parent_id in chain for chain in ancestry) and all(c.state.is_completed() for c in children)
    assert most_at_once([(c.start_time, c.end_time) for c in children]) == 2
    assert len(stage_dirs(ws, "report")) == 1 and (stage_dirs(ws, "report")[0] / "report.html").is_file()
    metrics = catalog.query(Workspace(ws), "select learner, level from run_metrics")
    assert len(metrics) == 8


# ---------------------------------------------------------------- static: no server, no engine

def test_prefect_yaml_follows_prefects_model_and_the_flows_signatures():
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.flows import load_flow_from_entrypoint

    from tailstudy.flows import server
    from tailstudy.flows.cli_server import GPU_POOL, PROCESS_POOL
    from tailstudy.flows.deployments import ENTRY_FLOWS

    raw = yaml.safe_load(PREFECT_YAML.read_text())
    model = PrefectYamlModel.model_validate(raw)
    names = [d.name for d in model.deployments]
    assert len(names) == len(set(names)) == len(raw["deployments"])
    assert server.PREFECT_YAML == PREFECT_YAML  # a checkout reads its own deploy/ (a wheel ships a copy)
    assert [d["name"] for d in server.read_deployments(PREFECT_YAML)] == names  # tailstudy deploy reads all of it
    in_image = [{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/tailstudy"}}]
    for deployment in model.deployments:
        # a module path, imported from the installed package wherever the worker runs: no file of a checkout
        assert ":" not in deployment.entrypoint and deployment.entrypoint.startswith("tailstudy.flows.deployments.")
        flow = load_flow_from_entrypoint(deployment.entrypoint, use_placeholder_flow=False)
        assert flow in ENTRY_FLOWS.values(), deployment.entrypoint
        flow.validate_parameters(deployment.parameters)  # every parameter exists and has the right type
        assert deployment.work_pool.name in (PROCESS_POOL, GPU_POOL)
        if deployment.work_pool.name == GPU_POOL:
            assert deployment.pull == in_image, deployment.name
        else:  # `prefect deploy` records the checkout it runs in
            assert deployment.pull is None and not deployment.work_pool.job_variables, deployment.name
    weekly = next(d for d in model.deployments if d.name == "study-weekly")
    assert [(s.cron, s.active) for s in weekly.schedules] == [("0 3 * * 1", False)]
    assert "spec" not in weekly.parameters  # the embedded default study: no path that only a checkout has


def render_gpu_job(job_variables: dict) -> dict:
    """The Job the Kubernetes worker would submit for a flow run: the pool's template filled with its defaults and the
    deployment's job variables (prefect's own templating), then the worker's own additions (env as a list, the
    command as args)."""
    from prefect.utilities.templating import apply_values

    template = json.loads(GPU_TEMPLATE.read_text())
    properties = template["variables"]["properties"]
    values = {name: spec["default"] for name, spec in properties.items() if "default" in spec}
    values.update(name="tailstudy-run", labels={"prefect.io/flow-run-name": "tiny"},
                  command="prefect flow-run execute", **job_variables)
    config = apply_values(template["job_configuration"], values)
    manifest = config["job_manifest"]
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": k, "value": v} for k, v in config["env"].items()]
    container["args"] = shlex.split(container["args"])
    return manifest


def test_gpu_job_template_renders_valid_kubernetes_jobs():
    import jsonschema
    import kubernetes_validate

    template = json.loads(GPU_TEMPLATE.read_text())
    variables = template["variables"]
    jsonschema.Draft7Validator.check_schema(variables)
    deployments = {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
    seen = {}
    for name, deployment in deployments.items():
        if deployment["work_pool"]["name"] != "tailstudy-gpu":
            continue
        job_variables = deployment["work_pool"].get("job_variables", {})
        jsonschema.validate(job_variables, variables)
        manifest = render_gpu_job(job_variables)
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        pod = manifest["spec"]["template"]["spec"]
        seen[name] = (pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"], pod.get("nodeSelector"))
        assert {"name": "TAILSTUDY_WORKSPACE", "value": "/workspace"} in pod["containers"][0]["env"]
        assert pod["containers"][0]["workingDir"] == "/opt/tailstudy"
    assert seen == {"study-gpu": (0, {}),  # the driver; its training runs are train-gpu child flow runs
                    "train-gpu": (1, {"nvidia.com/gpu.present": "true"}),
                    "match-dask": (0, {})}
    # a train run on 4 GPUs: `tailstudy submit --gpus 4` sets the job variable
    four = render_gpu_job({"gpus": 4})
    kubernetes_validate.validate(four, K8S_VERSION, strict=True)
    assert four["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4


def k8s_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def test_kubernetes_manifests_validate_against_the_api_schemas():
    import kubernetes_validate

    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    kinds = []
    for name, doc in k8s_documents():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        kinds.append((doc["kind"], doc["metadata"]["name"]))
    for needed in [("Deployment", "tailstudy-server"), ("Deployment", "tailstudy-worker-gpu"),
                   ("StatefulSet", "tailstudy-postgres"), ("PersistentVolumeClaim", "tailstudy-workspace"),
                   ("Service", "tailstudy-dask-scheduler")]:
        assert needed in kinds
    # the names the job template and prefect.yaml rely on
    template = json.loads(GPU_TEMPLATE.read_text())["variables"]["properties"]
    assert ("PersistentVolumeClaim", template["workspace_claim"]["default"]) in kinds
    assert ("ServiceAccount", template["service_account_name"]["default"]) in kinds
    dask = next(d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"] if d["name"] == "match-dask")
    assert dask["parameters"]["task_runner"] == "tcp://tailstudy-dask-scheduler:8786"
    worker = next(doc for _, doc in k8s_documents() if doc["metadata"]["name"] == "tailstudy-worker-gpu")
    command = worker["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--pool") + 1] == "tailstudy-gpu"
    kubectl = shutil.which("kubectl")
    if kubectl:  # kustomize is built into kubectl and works offline: validate what `kubectl apply -k` would send
        built = subprocess.run([kubectl, "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True,
                               timeout=120)
        assert built.returncode == 0, built.stderr
        for doc in yaml.safe_load_all(built.stdout):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "tailstudy"


def compose_cli() -> list[str] | None:
    """A Docker Compose v2 CLI, when this machine has one: the docker plugin, else a standalone docker-compose."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if not shutil.which(command[0]):
            continue
        try:
            version = subprocess.run([*command, "version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if version.returncode == 0 and re.search(r"v?2\.\d+", version.stdout):
            return command
    return None


def test_compose_file_is_valid_without_an_engine():
    compose_file = DEPLOY / "docker-compose.yml"
    env = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "TAILSTUDY_IMAGE")}
    # 1. the Compose Specification's JSON schema (check-jsonschema ships the compose-spec project's schema)
    checked = subprocess.run([VENV_BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec",
                              str(compose_file)], capture_output=True, text=True, timeout=120, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # 2. what `docker compose config` resolves beyond the schema: references, paths, interpolation defaults
    text = compose_file.read_text()
    assert not re.findall(r"\$\{(\w+)\}", text), "every ${VAR} needs a default (${VAR:-value}): config needs no env"
    data = yaml.safe_load(text)
    services, volumes = data["services"], set(data.get("volumes") or {})
    assert {"postgres", "server", "worker"} <= set(services)
    for name, service in services.items():
        for dep in service.get("depends_on") or {}:
            assert dep in services, (name, dep)
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            assert source in volumes or source.startswith((".", "/")), (name, source)
        if "build" in service:
            context = (compose_file.parent / service["build"]["context"]).resolve()
            assert context == REPO and (context / service["build"]["dockerfile"]).is_file()
        command = service.get("command") or []
        if command and service.get("image", "").startswith("${TAILSTUDY_IMAGE"):
            assert (VENV_BIN / command[0]).is_file(), command  # the image's .venv/bin has it too
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), port
    worker = services["worker"]["command"]
    assert worker[worker.index("--pool") + 1] == "tailstudy-process"
    gpus = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpus["driver"] == "nvidia" and gpus["capabilities"] == ["gpu"]
    # 3. the real thing, wherever a Compose v2 CLI is installed (no engine needed for `config`)
    cli = compose_cli()
    if cli:
        done = subprocess.run([*cli, "-f", str(compose_file), "--profile", "cpu", "--profile", "dask", "config",
                               "--quiet"], capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
        assert done.returncode == 0, done.stderr


def test_dockerfile_installs_the_project_the_readme_way():
    import dockerfile

    commands = dockerfile.parse_file(str(DEPLOY / "Dockerfile"))  # BuildKit's own parser
    args = {c.value[0].split("=", 1)[0]: c.value[0].split("=", 1)[1] for c in commands
            if c.cmd == "ARG" and "=" in c.value[0]}
    froms = [c.value[0] for c in commands if c.cmd == "FROM"]
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:13.") and froms[-1] == "${CUDA_IMAGE}"
    assert args["PYTHON_VERSION"] == "3.11"
    runs = " ".join(c.value[0] for c in commands if c.cmd == "RUN")
    assert "bash deploy/setup.sh" in runs and "bash deploy/setup.sh" in (REPO / "README.md").read_text()
    assert "-r deploy/requirements.lock" in runs
    assert "tailstudy --help" in runs
    copies = [c.value for c in commands if c.cmd == "COPY"]
    assert ("deploy/requirements.lock", "deploy/requirements.lock") in copies and (".", ".") in copies
    assert [c.value[0] for c in commands if c.cmd == "WORKDIR"] == ["/opt/tailstudy"]  # prefect.yaml's in-image dir
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", "workspace", ".git"} <= set(ignored)
    setup = (DEPLOY / "setup.sh").read_text()
    assert "pip uninstall -q -y dataclasses" in setup and "-e ." in setup


def test_task_runner_names():
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from tailstudy.flows.task_runners import local_cluster_kwargs, make_task_runner, parse_task_runner
    from tailstudy.errors import InputError

    assert isinstance(make_task_runner(None), ThreadPoolTaskRunner)
    assert make_task_runner("threads:3")._max_workers == 3
    assert isinstance(make_task_runner("processes:2"), ProcessPoolTaskRunner)
    local = make_task_runner("dask:2")
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs == local_cluster_kwargs(2)
    assert local.cluster_kwargs["host"] == "127.0.0.1" and local.cluster_kwargs["dashboard_address"] is None
    assert make_task_runner("dask://scheduler:8786").address == "tcp://scheduler:8786"
    assert parse_task_runner("tcp://10.0.0.5:8786") == ("dask-address", {"address": "tcp://10.0.0.5:8786"})
    for bad in ("spark", "dask:0", "local:2", "http://x:1", "tcp://"):
        with pytest.raises(InputError):
            parse_task_runner(bad)


def test_torchrun_launcher():
    from tailstudy.flows.torchrun import check_gpus, torchrun_command
    from tailstudy.errors import InputError

    command = torchrun_command(4, "/s/tiny.yaml", "/ws", "abc123", force=True)
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert command[5:] == ["-m", "tailstudy.flows.torchrun", "--spec", "/s/tiny.yaml", "--workspace", "/ws",
                           "--train-key", "abc123", "--force"]
    # one of several concurrent runs (flows/executor.py): one process, pinned to its GPU or its share of threads
    single = torchrun_command(1, "/s/tiny.yaml", "/ws", "abc123", device="cuda:1", threads=2)
    assert single[1:] == ["-m", "tailstudy.flows.torchrun", "--spec", "/s/tiny.yaml", "--workspace", "/ws", "--train-key",
                          "abc123", "--device", "cuda:1", "--threads", "2"]
    check_gpus(0)  # the spec's device: always allowed
    with pytest.raises(InputError):
        check_gpus(-1)
    import torch

    if torch.cuda.device_count() < 2:
        with pytest.raises(InputError, match="gpus=2"):
            check_gpus(2)


def test_deploy_and_submit_need_a_server(monkeypatch, capsys):
    from tailstudy.flows.cli import main

    for args in (["deploy"], ["submit"]):  # conftest runs the tests without PREFECT_API_URL
        monkeypatch.setattr(sys, "argv", ["tailstudy", *args])
        with pytest.raises(SystemExit) as exit_:
            main()
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "PREFECT_API_URL" in err and len(err.strip().splitlines()) == 1, err
