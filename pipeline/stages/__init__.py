"""The study's stages, one module each, and the registry that names them.

Each module states its rule in its docstring and defines one ``Stage`` (name, VERSION, ``key``, ``build``) plus a
function that makes its node. ``plan.py`` wires nodes into a study graph; ``base.run_node`` builds one node (or reuses
its artifact); ``tailstudy.flows.executor`` runs a whole graph concurrently on Prefect. Adding a stage = one module + one line
below (and, to put it in a study, one line in ``plan.py``).
"""
from __future__ import annotations

from importlib import import_module

from tailstudy.stages.base import Artifact, BuildContext, Node, Stage, resolve, resolve_all, run_local, run_node, walk

# stage name -> (module, class); each module is imported on first use, so a command that runs a few stages
# (`tailstudy match`: vocab, match, frequency) never imports the others' dependencies (spec/pydantic, torch, ...)
_STAGE_CLASSES = {
    "vocab": ("vocab", "VocabStage"), "source": ("source", "SourceStage"), "corpus": ("corpus", "CorpusStage"),
    "match": ("match", "MatchStage"), "frequency": ("frequency", "FrequencyStage"), "curate": ("curate", "CurateStage"),
    "train": ("train", "TrainStage"), "evaluate": ("evaluate", "EvaluateStage"), "report": ("report", "ReportStage"),
    "index": ("index", "IndexStage"), "describe": ("describe", "DescribeStage"),  # tailstudy match --index
}


class _Registry(dict):
    """name -> Stage instance, built on first look-up; iterating it builds every stage."""

    def __missing__(self, name: str) -> Stage:
        if name not in _STAGE_CLASSES:
            raise KeyError(name)
        module, cls = _STAGE_CLASSES[name]
        self[name] = getattr(import_module(f"tailstudy.stages.{module}"), cls)()
        return self[name]

    def _all(self) -> None:
        for name in _STAGE_CLASSES:
            if not dict.__contains__(self, name):
                self.__missing__(name)

    def __iter__(self):
        self._all()
        return dict.__iter__(self)

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or name in _STAGE_CLASSES

    def keys(self):
        self._all()
        return dict.keys(self)

    def values(self):
        self._all()
        return dict.values(self)

    def items(self):
        self._all()
        return dict.items(self)

    def __len__(self) -> int:
        self._all()
        return dict.__len__(self)


REGISTRY: dict[str, Stage] = _Registry()
# the stages of a study, in order (what --force names); `source` is the corpus's ingested input, forced by name only
STAGES = ("vocab", "corpus", "match", "frequency", "curate", "train", "evaluate", "report")


def check_force(force: list[str] | None) -> list[str]:
    """--force names: stages of a study, or 'all'."""
    from tailstudy.errors import InputError

    bad = [f for f in force or [] if f not in (*STAGES, "all")]
    if bad:
        raise InputError(f"--force {bad[0]}: unknown stage (stages: {', '.join(STAGES)}, all)")
    return list(force or [])


# the other public names, imported from their modules on first use (PEP 562)
_LAZY = {"StudyGraph": "plan", "match_captions": "plan", "plan_match": "plan", "plan_study": "plan",
         "write_study_records": "plan", "corpus_config": "corpus", "cell_id": "curate", "target_concepts": "curate",
         "collect_results": "report", "source_node": "source", "train_config": "train",
         **{cls: module for module, cls in _STAGE_CLASSES.values()}}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f"tailstudy.stages.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Artifact", "BuildContext", "check_force", "Node", "Stage", "REGISTRY", "STAGES", "StudyGraph", "plan_study",
           "plan_match", "match_captions", "run_node", "run_local", "resolve", "resolve_all", "walk", "cell_id", "corpus_config",
           "target_concepts", "collect_results", "source_node", "train_config", "write_study_records"]
