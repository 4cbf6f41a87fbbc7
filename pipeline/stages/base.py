"""A stage, a node of the study graph, and what a node's build is given.

A **stage** is code: a name, a VERSION, ``key(config, upstream keys)`` and ``build(ctx, out_dir)``, plus what its
builds need, as data the executor reads (``resources``, ``uses_torch_rng``, ``isolated``, ``dispatchable``, and
``work``, which orders ready builds: the executor names no stage). A **node** is one use of a stage in a graph: its
config, the upstream nodes it reads (by role) and, once known, its key. Most keys are known when the graph is
planned; a key that hashes an upstream artifact's *content* (a training run hashes its subset's content) is resolved
once that artifact exists (``tailstudy.stages.registry``, which also builds a node: reuse the artifact at (stage, key)
unless forced, else build it atomically, ``Workspace.build``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, ContextManager, Iterable

from tailstudy.store import Artifact, Workspace, stage_key


class Stage:
    """Subclass per stage; register an instance in ``tailstudy.stages.registry.REGISTRY``."""

    name: ClassVar[str]
    VERSION: ClassVar[int]
    folder: ClassVar[str] = ""  # the workspace folder of its artifacts (default: the stage name)
    key_roles: ClassVar[tuple[str, ...] | None] = None  # upstream roles hashed into the key (None: all)
    reads_upstream: ClassVar[bool] = False  # the key hashes upstream *artifacts*, so they must exist first
    # what a build needs beyond its slots (flows/executor.py reads these, never a stage's name):
    uses_torch_rng: ClassVar[bool] = False  # it draws from torch's process-global RNG (it builds or trains a model)
    isolated: ClassVar[bool] = False  # it may build in a process of its own (tailstudy.flows.torchrun), DDP included
    dispatchable: ClassVar[bool] = False  # it may build as a child flow run of a deployment (another work pool)

    @property
    def dir(self) -> str:
        return self.folder or self.name

    def key_config(self, config: dict) -> Any:
        """The config slice that can change this stage's output."""
        return config.get("key", {})

    def upstream_keys(self, node: "Node", ws: Workspace) -> dict[str, str]:
        roles = node.upstream if self.key_roles is None else self.key_roles
        return {**{role: node.upstream[role].key for role in roles if role in node.upstream}, **node.given}

    def key(self, config: dict, upstream: dict[str, str]) -> str:
        return stage_key(self.dir, self.VERSION, self.key_config(config), upstream or None)

    def inputs(self, node: "Node") -> dict:
        """The manifest's record of what this artifact was built from (not hashed)."""
        return {role: up.key for role, up in node.upstream.items()}

    def resources(self, node: "Node", gpus: int = 0) -> dict[str, int]:
        """Slots one build holds while it runs, on a machine with `gpus` visible GPUs: "cpu" (one of --jobs),
        "parallel" (one of train.parallel: a training run on CPU) or "gpu" (a device the build is pinned to)."""
        return {"cpu": 1}

    def work(self, node: "Node", ws: Workspace) -> float:
        """How long a build takes, relative to the other builds of this stage (0: short, not worth ordering; builds of
        different stages mostly wait for different slots). The executor starts the ready builds with the most work
        first (longest first), so the builds that end a study are short ones and no slot idles through a long last
        one. Called once the node is ready to build."""
        return 0.0

    def progress(self, node: "Node") -> ContextManager[Callable | None]:
        """A context manager yielding the build's progress callback (a bar of tailstudy.progress), or None."""
        return contextlib.nullcontext(None)

    def build(self, ctx: "BuildContext", out: Path) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(eq=False)
class Node:
    stage: str
    config: dict = field(default_factory=dict)
    upstream: dict[str, "Node"] = field(default_factory=dict)
    label: str = ""
    given: dict[str, str] = field(default_factory=dict)  # upstream keys that are not nodes (an input file's digest)
    key: str | None = None

    def find(self, stage: str) -> "Node":
        """The nearest upstream node (or this one) of `stage`."""
        for node in walk([self]):
            if node.stage == stage:
                return node
        raise KeyError(stage)


@dataclass
class BuildContext:
    """What one build is given: its node, the artifacts of its upstream nodes (by role), the device it is pinned to."""

    ws: Workspace
    node: Node
    upstream: dict[str, Artifact] = field(default_factory=dict)
    force: bool = False
    device: str | None = None  # a pinned device ("cuda:1") for nodes that need one; None: the spec's choice
    progress: Callable | None = None
    options: dict = field(default_factory=dict)  # runtime knobs that never change an artifact (workers, map_shards)

    @property
    def config(self) -> dict:
        return self.node.config

    def path(self, role: str) -> Path:
        return self.upstream[role].path

    def artifact(self, role: str) -> Artifact:
        return self.upstream[role]


def walk(nodes: Iterable[Node]) -> list[Node]:
    """Every node reachable upstream from `nodes`, upstream first (a topological order), each once."""
    seen: dict[int, Node] = {}

    def visit(node: Node) -> None:
        if id(node) in seen:
            return
        for up in node.upstream.values():
            visit(up)
        seen[id(node)] = node

    for node in nodes:
        visit(node)
    return list(seen.values())
