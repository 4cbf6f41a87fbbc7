"""One executor for every graph of stage nodes (a study, its data stages, its training runs).

It submits every node whose upstream nodes are done, concurrently, as Prefect tasks, within resource limits. It
names no stage: each stage declares what its builds need (``tailstudy.stages.base.Stage``): ``resources`` (``cpu``:
at most ``jobs`` at a time; ``parallel``: a training run on CPU, at most ``parallel`` at a time, the spec's
``train.parallel``; ``gpu``: at most one per visible GPU, pinned to its own ``cuda:I``), ``uses_torch_rng``,
``isolated`` and ``dispatchable``; among the nodes ready at once, those whose stage declares the most ``work``
start first (longest first: the last builds of a study are then short ones, not one long run beside idle slots). A
node's Prefect task is cached by its stage key (never by run id) and refreshed when its artifact is missing or forced,
so a finished artifact is reused exactly as by ``tailstudy.stages.run_node``. Nodes with the same (stage, key) (the
base cell under every factor) are built once; the others are recorded as ``shared``.

Concurrency, one mechanism per reason (here, then below the executor):
1. a thread pool (Prefect's ThreadPoolTaskRunner): each node a Prefect task (cached, in the UI); threads suffice, as a
   build runs in Arrow, DuckDB, torch or a child process, outside the GIL.
2. slots (`Slots`), the one limiter of what runs at once: CPU jobs, CPU training runs, pinned GPUs, waiting child flow
   runs, and torch's process-global RNG (one build drawing from it at a time while a seeded run trains here).
3. child processes (tailstudy.flows.torchrun) for ``isolated`` builds that overlap: torch's seed, threads and device
   are per process, so two runs in one process would not reproduce either run alone.
4. DDP (torchrun, N ranks): one isolated build over N local GPUs (``ddp``).
5. child flow runs (``dispatch``): ``dispatchable`` builds on another work pool (GPU machines), whose concurrency
   limit, not this process, decides how many run.
6. file locks (tailstudy.locks): one builder per artifact, across processes (flow runs of a deployment share a
   workspace); the workspace lock: one `tailstudy run` / `match` / `ingest` per workspace.
7. the match stage's process pool (tailstudy.matching.sharded): matching is CPU-bound Python, one process per core.
8. the flow's task runner, for the match stage's shards mapped as tasks: Dask spreads them over machines
   (tailstudy.flows.task_runners).
9. a training run's DataLoader workers (tailstudy.data): decoding and augmentation beside the model's step.
Removed as duplicates: a planning thread of `tailstudy match` (hashing beside the matcher's build: 0.04 s on 1M
captions), three rules for where a training run builds (one: `where`), second definitions of the GPU and core counts.
Prefect's threads:N and processes:N runners still duplicate 7 for the match shards (they are CLI options).
"""
from __future__ import annotations

import hashlib
import queue
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from prefect import task
from prefect.context import TaskRunContext
from prefect.deployments import run_deployment
from prefect.task_runners import ThreadPoolTaskRunner

from tailstudy.flows.torchrun import launch, visible_gpus
from tailstudy.stages import STAGES, Node, Stage, resolve, run_node, stage_of, walk
from tailstudy.store import Artifact, Workspace

DISPATCHED = 64  # builds waiting on child flow runs at once (the work pool's concurrency does the limiting)


def stage_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Workspace + stage + stage key: the same inputs in the same workspace hit the same cache entry.
    (The key names a file in the result store, so the workspace path enters as a digest.)"""
    workspace = hashlib.sha256(parameters["workspace"].encode()).hexdigest()[:12]
    return f"{parameters['stage']}-{parameters['key']}-{workspace}"


@task(cache_key_fn=stage_cache_key, persist_result=True, retries=0)
def node_task(workspace: str, stage: str, key: str, label: str, build: Callable[[], Artifact]) -> dict:
    art = build()
    return {"stage": stage, "key": art.key, "status": art.status, "label": label, "path": str(art.path)}


@dataclass
class Slots:
    """Resource limits; a GPU slot is a device index, handed to the node it runs."""

    limits: dict[str, int]
    gpus: list[int] = field(default_factory=list)
    used: dict[str, int] = field(default_factory=dict)

    def take(self, needs: dict[str, int]) -> dict | None:
        if any(self.used.get(r, 0) + n > self.limits.get(r, 1) for r, n in needs.items()):
            return None
        if needs.get("gpu") and len(self.gpus) < needs["gpu"]:
            return None
        for r, n in needs.items():
            self.used[r] = self.used.get(r, 0) + n
        devices = [self.gpus.pop(0) for _ in range(needs.get("gpu", 0))]
        return {"needs": needs, "devices": devices}

    def give(self, taken: dict) -> None:
        for r, n in taken["needs"].items():
            self.used[r] -= n
        self.gpus = sorted(self.gpus + taken["devices"])


@dataclass
class Executor:
    """Runs nodes (and everything upstream of them) of one workspace; `records` lists what ran, was reused, shared."""

    ws: Workspace
    force: set[str] = field(default_factory=set)
    jobs: int = 1
    parallel: int = 1
    threads: int | None = None  # torch threads of each isolated build on CPU (None: the cores / parallel)
    spec_path: str | None = None  # lets isolated builds run in child processes (needed when runs overlap)
    ddp: int = 0  # > 1: each isolated build is one DDP run over this many local GPUs (torchrun)
    dispatch: str | None = None  # FLOW/DEPLOYMENT: dispatchable builds become child flow runs of it
    progress: Callable[[Node], Any] | None = None  # node -> context manager yielding its progress callback
    options: dict = field(default_factory=dict)  # runtime knobs for builds (e.g. the match stage's map_shards)
    records: list[dict] = field(default_factory=list)
    finished: dict[tuple, dict] = field(default_factory=dict)  # (stage, key) -> its record, across run() calls
    gpu_count: int = field(default=0, init=False)
    _work: dict[int, float] = field(default_factory=dict, init=False)

    def forced(self, node: Node) -> bool:
        return node.stage in self.force or ("all" in self.force and node.stage in STAGES)

    def slots(self) -> Slots:
        gpus = visible_gpus()
        return Slots({"cpu": self.jobs, "parallel": self.parallel, "gpu": gpus, "dispatch": DISPATCHED, "torch_rng": 1},
                     list(range(gpus)))

    def where(self, stage: Stage) -> str:
        """Where a build of `stage` runs: "flow" (a child flow run), "process" (a child process) or "here"."""
        if stage.dispatchable and self.dispatch:
            return "flow"
        if stage.isolated and self.isolating():
            return "process"
        return "here"

    def isolating(self) -> bool:
        """Isolated builds overlap (several CPU runs, several GPUs, DDP), so each gets a process of its own."""
        return self.spec_path is not None and (self.parallel > 1 or self.ddp > 1 or self.gpu_count > 1)

    def needs(self, node: Node) -> dict[str, int]:
        stage = stage_of(node)
        where = self.where(stage)
        if where == "flow":
            return {"dispatch": 1}
        if stage.isolated and self.ddp > 1:
            return {"gpu": self.ddp}
        needs = stage.resources(node, self.gpu_count)
        # torch's RNG is per process: while isolated builds (a seeded training run) may run here, no two builds here
        # that draw from it overlap
        if where == "here" and stage.uses_torch_rng and not self.dispatch and not self.isolating():
            needs = {**needs, "torch_rng": 1}
        return needs

    def build_fn(self, node: Node, taken: dict) -> Callable[[], Artifact]:
        device = f"cuda:{taken['devices'][0]}" if taken["devices"] else None
        forced, where = self.forced(node), self.where(stage_of(node))

        def build() -> Artifact:
            if where == "flow":
                return self.build_in_child_flow(node, forced)
            if where == "process":
                return self.build_in_child(node, device, forced)
            if self.progress is None:
                return run_node(self.ws, node, forced, device, **self.options)
            with self.progress(node) as bar:
                return run_node(self.ws, node, forced, device, bar, **self.options)

        return build

    def elsewhere(self, node: Node, forced: bool, build: Callable[[], None]) -> Artifact:
        """Reuse the node's artifact, or have another process build it (`build`), which must leave it in place."""
        stage = stage_of(node)
        path = self.ws.root / stage.dir / node.key
        if self.ws.exists(stage.dir, node.key) and not forced:
            return Artifact(stage.dir, node.key, path, "reused", node.label)
        build()
        if not self.ws.exists(stage.dir, node.key):
            raise RuntimeError(f"{node.stage} {node.label}: finished elsewhere but left no artifact at {path}")
        return Artifact(stage.dir, node.key, path, "ran", node.label)

    def build_in_child(self, node: Node, device: str | None, forced: bool) -> Artifact:
        """A build in a process of its own (tailstudy.flows.torchrun): pinned to `device`, or on its share of cores."""
        threads = (self.threads or max(1, torch.get_num_threads() // max(self.parallel, 1))) if device is None else None
        if self.ddp > 1:
            device, threads = None, None  # torchrun gives each rank its LOCAL_RANK's GPU
        return self.elsewhere(node, forced, lambda: launch(max(self.ddp, 1), self.spec_path, self.ws.root, node.key,
                                                           forced, device, threads))

    def build_in_child_flow(self, node: Node, forced: bool) -> Artifact:
        """Build on the dispatch deployment's work pool, as a child flow run of this one; wait for it to end."""
        def build() -> None:
            params = {"spec": self.spec_path, "workspace": str(self.ws.root), "train_keys": [node.key],
                      "force": [node.stage] if forced else []}
            child = run_deployment(self.dispatch, parameters=params, timeout=None, poll_interval=1,
                                   flow_run_name=f"{node.stage}-{node.label}".replace("/", "-").replace("=", "-"),
                                   tags=["tailstudy", "dispatched"])
            if not child.state.is_completed():
                raise RuntimeError(f"{node.stage} {node.label}: child flow run {child.name} ended {child.state.name}")

        return self.elsewhere(node, forced, build)

    def submit(self, runner: ThreadPoolTaskRunner, node: Node, taken: dict):
        stage = stage_of(node)
        refresh = self.forced(node) or not self.ws.exists(stage.dir, node.key)
        name = f"{node.stage}[{node.label or node.key}]"
        configured = node_task.with_options(name=node.stage, task_run_name=name, refresh_cache=refresh)
        return runner.submit(configured, {"workspace": str(self.ws.root), "stage": node.stage, "key": node.key,
                                          "label": node.label, "build": self.build_fn(node, taken)})

    def run(self, targets: list[Node]) -> list[dict]:
        """Build `targets` and their upstream nodes; returns once all are done (raises the first failure)."""
        slots = self.slots()
        self.gpu_count = len(slots.gpus)
        pending, done, finished, earlier = walk(targets), set(), self.finished, set(self.finished)
        running: dict[int, tuple[Node, dict, Any]] = {}
        events: queue.Queue = queue.Queue()
        failure = None
        workers = self.jobs + self.parallel + len(slots.gpus) + (DISPATCHED if self.dispatch else 0)
        with ThreadPoolTaskRunner(max_workers=workers) as runner:
            while pending or running:
                if failure is None:
                    self._start_ready(runner, pending, done, finished, earlier, running, slots, events)
                if not running:
                    if pending and failure is None:
                        raise RuntimeError(f"no node can start: {[n.label for n in pending][:3]}")
                    break
                node, taken, future = running.pop(events.get())
                slots.give(taken)
                try:
                    record = self._record(future)
                except BaseException as exc:  # noqa: BLE001 - re-raised once the running nodes have finished
                    failure = failure or exc
                    continue
                done.add(id(node))
                finished[(node.stage, node.key)] = record
        if failure is not None:
            raise failure
        order = {(n.stage, n.label): i for i, n in enumerate(walk(targets))}
        self.records.sort(key=lambda r: order.get((r["stage"], r["label"]), len(order)))
        return self.records

    def _start_ready(self, runner, pending, done, finished, earlier, running, slots, events) -> None:
        claimed = {(n.stage, n.key) for n, _, _ in running.values()} | set(finished)
        ready = self._ready(pending, done, finished, earlier)
        # longest first (the stages' `work`; stable, so equal builds keep the graph's order): a study then ends on
        # short builds instead of one long run with the other slots idle
        for node in sorted(ready, key=lambda n: -self.work(n)):
            ident = (node.stage, node.key)
            if ident in claimed:
                continue
            taken = slots.take(self.needs(node))
            if taken is None:
                continue
            future = self.submit(runner, node, taken)
            running[id(future)] = (node, taken, future)
            claimed.add(ident)
            future.add_done_callback(lambda f: events.put(id(f)))
            pending.remove(node)

    def _ready(self, pending: list, done: set, finished: dict, earlier: set) -> list[Node]:
        """The pending nodes whose upstream is done, after settling those whose artifact this executor already has
        (built or reused in an earlier run(): recorded once, as shared); settling one can make its downstream ready."""
        while True:
            ready = [n for n in pending if all(id(up) in done for up in n.upstream.values()) and resolve(n, self.ws)]
            settled = [n for n in ready if (n.stage, n.key) in finished]
            if not settled:
                return ready
            for node in settled:
                ident = (node.stage, node.key)
                if ident not in earlier:
                    self.records.append({**finished[ident], "status": "shared", "label": node.label})
                done.add(id(node))
                pending.remove(node)

    def work(self, node: Node) -> float:
        if id(node) not in self._work:  # asked once per node (it may wait through many events for a slot)
            self._work[id(node)] = stage_of(node).work(node, self.ws)
        return self._work[id(node)]

    def _record(self, future) -> dict:
        record = dict(future.result())
        if future.state.name == "Cached":
            record["status"] = "reused"
        self.records.append(record)
        return record
