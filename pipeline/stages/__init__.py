"""The study's stages, one module each, and the registry that names them.

Each module states its rule in its docstring and defines one ``Stage`` (name, VERSION, ``key``, ``build``) plus a
function that makes its node. ``plan.py`` wires nodes into a study graph; ``base.run_node`` builds one node (or reuses
its artifact); ``flows.executor`` runs a whole graph concurrently on Prefect. Adding a stage = one module + one line
below (and, to put it in a study, one line in ``plan.py``).
"""
from __future__ import annotations

from pipeline.stages.base import Artifact, BuildContext, Node, Stage, resolve, resolve_all, run_local, run_node, walk
from pipeline.stages.corpus import CorpusStage, corpus_config
from pipeline.stages.curate import CurateStage, cell_id, target_concepts
from pipeline.stages.describe import DescribeStage
from pipeline.stages.evaluate import EvaluateStage
from pipeline.stages.frequency import FrequencyStage
from pipeline.stages.index import IndexStage
from pipeline.stages.match import MatchStage
from pipeline.stages.report import ReportStage, collect_results
from pipeline.stages.source import SourceStage, source_node
from pipeline.stages.train import TrainStage, train_config
from pipeline.stages.vocab import VocabStage

REGISTRY: dict[str, Stage] = {stage.name: stage for stage in (
    VocabStage(), SourceStage(), CorpusStage(), MatchStage(), FrequencyStage(), CurateStage(), TrainStage(),
    EvaluateStage(), ReportStage(), IndexStage(), DescribeStage(),  # the last two: tailstudy match --index (h15)
)}
# the stages of a study, in order (what --force names); `source` is the corpus's ingested input, forced by name only
STAGES = ("vocab", "corpus", "match", "frequency", "curate", "train", "evaluate", "report")


def check_force(force: list[str] | None) -> list[str]:
    """--force names: stages of a study, or 'all'."""
    from pipeline.errors import InputError

    bad = [f for f in force or [] if f not in (*STAGES, "all")]
    if bad:
        raise InputError(f"--force {bad[0]}: unknown stage (stages: {', '.join(STAGES)}, all)")
    return list(force or [])


from pipeline.stages.plan import StudyGraph, match_captions, plan_match, plan_study, write_study_records  # noqa: E402

__all__ = ["Artifact", "BuildContext", "check_force", "Node", "Stage", "REGISTRY", "STAGES", "StudyGraph", "plan_study",
           "plan_match", "match_captions", "run_node", "run_local", "resolve", "resolve_all", "walk", "cell_id", "corpus_config",
           "target_concepts", "collect_results", "source_node", "train_config", "write_study_records"]
