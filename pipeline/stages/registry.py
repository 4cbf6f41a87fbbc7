"""The stages by name, and how a node's key is resolved and its artifact reused or built.

REGISTRY holds one instance of every stage; adding a stage is one module and one line in STAGE_LIST. ``run_node``
builds one node in this process (or reuses its artifact); ``tailstudy.flows.executor`` runs a whole graph concurrently
on Prefect, through the same ``run_node``.
"""
from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Iterable

from tailstudy import __version__
from tailstudy.stages.base import BuildContext, Node, Stage, walk
from tailstudy.stages.corpus import CorpusStage
from tailstudy.stages.curate import CurateStage
from tailstudy.stages.describe import DescribeStage
from tailstudy.stages.evaluate import EvaluateStage
from tailstudy.stages.frequency import FrequencyStage
from tailstudy.stages.index import IndexStage
from tailstudy.stages.match import MatchStage
from tailstudy.stages.report import ReportStage
from tailstudy.stages.source import SourceStage
from tailstudy.stages.train import TrainStage
from tailstudy.stages.vocab import VocabStage
from tailstudy.store import Artifact, Workspace

STAGE_LIST = (VocabStage(), SourceStage(), CorpusStage(), MatchStage(), FrequencyStage(), CurateStage(), TrainStage(),
              EvaluateStage(), ReportStage(), IndexStage(), DescribeStage())
REGISTRY: dict[str, Stage] = {stage.name: stage for stage in STAGE_LIST}


def stage_of(node: Node) -> Stage:
    return REGISTRY[node.stage]


def resolve(node: Node, ws: Workspace | None) -> bool:
    """Fill in the node's key if its upstream allows; -> whether it is known."""
    if node.key is not None:
        return True
    stage = stage_of(node)
    if any(up.key is None for up in node.upstream.values()):
        return False
    if stage.reads_upstream and not upstream_built(node, ws):
        return False
    node.key = stage.key(node.config, stage.upstream_keys(node, ws))
    return True


def upstream_built(node: Node, ws: Workspace | None) -> bool:
    return ws is not None and all(ws.exists(stage_of(up).dir, up.key) for up in node.upstream.values())


def resolve_all(nodes: Iterable[Node], ws: Workspace | None = None) -> list[Node]:
    """Resolve every key that can be resolved now (upstream first); -> the nodes still without a key."""
    return [n for n in walk(nodes) if not resolve(n, ws)]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact, read from package metadata (no imports of them)."""
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
    upstream = {role: ws.artifact(stage_of(up).dir, up.key) for role, up in node.upstream.items()}
    ctx = BuildContext(ws, node, upstream, force, device, progress, options)
    status = ws.produce(stage.dir, node.key, lambda out: stage.build(ctx, out), manifest, force)
    return Artifact(stage.dir, node.key, final, status, node.label)


def run_local(ws: Workspace, targets: Iterable[Node], force: Callable[[Node], bool] = lambda n: False,
              **options) -> dict[str, Artifact]:
    """Build `targets` and everything upstream of them in this process, one node at a time (what ``tailstudy match``
    and ``tailstudy ingest`` use; a study runs through ``tailstudy.flows.executor``) -> artifacts by stage name (last
    wins)."""
    built: dict[str, Artifact] = {}
    for node in walk(targets):
        built[node.stage] = run_node(ws, node, force(node), **options)
    return built
