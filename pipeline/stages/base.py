"""A stage, a node of the study graph, and how one node is built.

A **stage** is code: a name, a VERSION, ``key(config, upstream keys)`` and ``build(ctx, out_dir)``. A **node** is one
use of a stage in a graph: its config, the upstream nodes it reads (by role), resource needs (``{"gpu": 1}``) and,
once known, its key. Most keys are known when the graph is planned; a key that hashes an upstream artifact's
*content* (a training run hashes its subset's content) is resolved once that artifact exists. Building a node reuses
the artifact at (stage, key) unless forced, else builds it atomically (``Workspace.build``).
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

from tailstudy import __version__
from tailstudy.store import Artifact, Workspace, stage_key


class Stage:
    """Subclass per stage; register an instance in ``tailstudy.stages.REGISTRY``."""

    name: ClassVar[str]
    VERSION: ClassVar[int]
    folder: ClassVar[str] = ""  # the workspace folder of its artifacts (default: the stage name)
    key_roles: ClassVar[tuple[str, ...] | None] = None  # upstream roles hashed into the key (None: all)
    reads_upstream: ClassVar[bool] = False  # the key hashes upstream *artifacts*, so they must exist first

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

    def resources(self, node: "Node") -> dict[str, int]:
        return {"cpu": 1}

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
    ws: Workspace
    node: Node
    force: bool = False
    device: str | None = None  # a pinned device ("cuda:1") for nodes that need one; None: the spec's choice
    progress: Callable | None = None
    options: dict = field(default_factory=dict)  # runtime knobs that never change an artifact (workers, map_shards)

    @property
    def config(self) -> dict:
        return self.node.config

    def path(self, role: str) -> Path:
        up = self.node.upstream[role]
        return self.ws.artifact(stage_of(up).dir, up.key).path

    def artifact(self, role: str) -> Artifact:
        up = self.node.upstream[role]
        return self.ws.artifact(stage_of(up).dir, up.key)


def stage_of(node: Node) -> Stage:
    from tailstudy.stages import REGISTRY

    return REGISTRY[node.stage]


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


def resolve(node: Node, ws: Workspace) -> bool:
    """Fill in the node's key if its upstream allows; -> whether it is known."""
    if node.key is not None:
        return True
    stage = stage_of(node)
    if any(up.key is None for up in node.upstream.values()):
        return False
    if stage.reads_upstream and (ws is None or not all(ws.exists(stage_of(u).dir, u.key) for u in node.upstream.values())):
        return False
    node.key = stage.key(node.config, stage.upstream_keys(node, ws))
    return True


def resolve_all(nodes: Iterable[Node], ws: Workspace | None = None) -> list[Node]:
    """Resolve every key that can be resolved now (upstream first); -> the nodes still without a key."""
    return [n for n in walk(nodes) if not resolve(n, ws)]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact, read from package metadata (no heavy imports)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"tailstudy": __version__, "python": platform.python_version()}
    for package in ("pyarrow", "duckdb", "numpy", "torch", "open_clip_torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:  # pragma: no cover - data-only installs
            pass
    return found


def run_node(ws: Workspace, node: Node, force: bool = False, device: str | None = None, progress=None,
             **options) -> Artifact:
    """Reuse the node's artifact or build it atomically; `force` rebuilds and swaps it in."""
    if not resolve(node, ws):
        raise RuntimeError(f"{node.stage}[{node.label}]: its key needs upstream artifacts that are not built yet")
    stage = stage_of(node)
    final = ws.root / stage.dir / node.key
    if ws.exists(stage.dir, node.key) and not force:
        return Artifact(stage.dir, node.key, final, "reused", node.label)
    manifest: dict[str, Any] = {"inputs": stage.inputs(node), "library": library_versions()}
    ctx = BuildContext(ws, node, force, device, progress, options)
    status = ws.produce(stage.dir, node.key, lambda out: stage.build(ctx, out), manifest, force)
    return Artifact(stage.dir, node.key, final, status, node.label)


def run_local(ws: Workspace, targets: Iterable[Node], force: Callable[[Node], bool] = lambda n: False,
              **options) -> dict[str, Artifact]:
    """Build `targets` and everything upstream of them in this process, one node at a time (what ``tailstudy match``
    and ``tailstudy ingest`` use; a study runs through ``tailstudy.flows.executor``) -> artifacts by stage name (last wins)."""
    built: dict[str, Artifact] = {}
    for node in walk(targets):
        built[node.stage] = run_node(ws, node, force(node), **options)
    return built
