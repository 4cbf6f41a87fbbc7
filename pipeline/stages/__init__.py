"""The study's stages, one module each, and the registry that names them.

Each module states its rule in its docstring and defines one ``Stage`` (name, VERSION, ``key``, ``build``) plus a
function that makes its node. ``plan.py`` wires nodes into a study graph; ``base.run_node`` builds one node (or reuses
its artifact); ``tailstudy.flows.executor`` runs a whole graph concurrently on Prefect. Adding a stage = one module + one line
below (and, to put it in a study, one line in ``plan.py``).
"""
from __future__ import annotations

from tailstudy.stages.base import Artifact, BuildContext, Node, Stage, resolve, resolve_all, run_local, run_node, walk
from tailstudy.stages.corpus import CorpusStage, corpus_config
from tailstudy.stages.curate import CurateStage, cell_id, target_concepts
from tailstudy.stages.describe import DescribeStage
from tailstudy.stages.evaluate import EvaluateStage
from tailstudy.stages.frequency import FrequencyStage
from tailstudy.stages.index import IndexStage
from tailstudy.stages.match import MatchStage
from tailstudy.stages.report import ReportStage, collect_results
from tailstudy.stages.source import SourceStage, source_node
from tailstudy.stages.train import TrainStage, train_config
from tailstudy.stages.vocab import VocabStage

REGISTRY: dict[str, Stage] = {stage.name: stage for stage in (
    VocabStage(), SourceStage(), CorpusStage(), MatchStage(), FrequencyStage(), CurateStage(), TrainStage(),
    EvaluateStage(), ReportStage(), IndexStage(), DescribeStage(),  # the last two: tailstudy match --index (h15)
)}
# the stages of a study, in order (what --force names); `source` is the corpus's ingested input, forced by name only
STAGES = ("vocab", "corpus", "match", "frequency", "curate", "train", "evaluate", "report")


def check_force(force: list[str] | None) -> list[str]:
    """--force names: stages of a study, or 'all'."""
    from tailstudy.errors import InputError

    bad = [f for f in force or [] if f not in (*STAGES, "all")]
    if bad:
        raise InputError(f"--force {bad[0]}: unknown stage (stages: {', '.join(STAGES)}, all)")
    return list(force or [])


from tailstudy.stages.plan import StudyGraph, match_captions, plan_match, plan_study, write_study_records  # noqa: E402

__all__ = ["Artifact", "BuildContext", "check_force", "Node", "Stage", "REGISTRY", "STAGES", "StudyGraph", "plan_study",
           "plan_match", "match_captions", "run_node", "run_local", "resolve", "resolve_all", "walk", "cell_id", "corpus_config",
           "target_concepts", "collect_results", "source_node", "train_config", "write_study_records"]
