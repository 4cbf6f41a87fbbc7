"""The study's stages, one module each, and the registry that names them.

Each module states its rule in its docstring and defines one ``Stage`` (name, VERSION, ``key``, ``build``, and what its
builds need: resources, torch RNG, isolation, dispatch) plus a function that makes its node. ``registry.py`` holds one
instance of each (adding a stage = one module + one line there; to put it in a study, one line in ``plan.py``) and
builds a node (``run_node``, reusing its artifact); ``plan.py`` wires nodes into a study graph;
``tailstudy.flows.executor`` runs a whole graph concurrently on Prefect.
"""
from __future__ import annotations

from tailstudy.errors import InputError
from tailstudy.items import target_concepts
from tailstudy.stages.base import BuildContext, Node, Stage, walk
from tailstudy.stages.corpus import corpus_config
from tailstudy.stages.curate import cell_id
from tailstudy.stages.plan import StudyGraph, index_and_describe, match_captions, plan_match, plan_study, \
    write_study_records
from tailstudy.stages.registry import REGISTRY, resolve, resolve_all, run_local, run_node, stage_of
from tailstudy.stages.report import collect_results
from tailstudy.stages.source import source_node
from tailstudy.stages.train import train_config
from tailstudy.store import Artifact

# the stages of a study, in order (what --force names); `source` is the corpus's ingested input, forced by name only
STAGES = ("vocab", "corpus", "match", "frequency", "curate", "train", "evaluate", "report")


def check_force(force: list[str] | None) -> list[str]:
    """--force names: stages of a study, or 'all'."""
    bad = [f for f in force or [] if f not in (*STAGES, "all")]
    if bad:
        raise InputError(f"--force {bad[0]}: unknown stage (stages: {', '.join(STAGES)}, all)")
    return list(force or [])


__all__ = ["Artifact", "BuildContext", "check_force", "Node", "Stage", "REGISTRY", "STAGES", "StudyGraph", "plan_study",
           "plan_match", "match_captions", "index_and_describe", "run_node", "run_local", "resolve", "resolve_all",
           "stage_of", "walk", "cell_id", "corpus_config", "target_concepts", "collect_results", "source_node",
           "train_config", "write_study_records"]
