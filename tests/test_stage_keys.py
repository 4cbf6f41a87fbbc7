"""Stage keys are a promise: the keys below were computed by the code before the stages became a graph (commit
f12fccb, pipeline/stages.py), so a workspace built by it is reused, not rebuilt. Change a pin only together with
the stage's VERSION."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.spec import default_spec_path, load_spec
from pipeline.stages import cell_id, plan_match, plan_study, resolve_all, run_local
from pipeline.store import Workspace
from tests.conftest import TINY_SPEC

DEFAULT = {'corpus': 'c88b23bc2cbbd22a',
 'curate': {'caption=a_cname': '2ec76f3ef6928a3a',
            'caption=full': '640cff757197603c',
            'imbalance=balanced': 'a011ba41be18d661',
            'imbalance=natural': '640cff757197603c'},
 'frequency': '7d382fa8242add65',
 'match': '10cce55a5b153f05',
 'vocab': 'a3aeeba032568692'}
TINY = {'corpus': 'bd6c19d31af157f9',
 'curate': {'caption=a_cname': '8939c53ff2ab1a5f',
            'caption=full': '49a426e3e9fb9cd8',
            'imbalance=balanced': '8b88b5b2cc3f9b75',
            'imbalance=natural': '49a426e3e9fb9cd8'},
 'frequency': 'aa8a7bc206bc90f4',
 'match': 'ebaaeea37c02d85b',
 'report': '0772220fd441fe09',
 'runs': {'caption=a_cname/clip/s0': ['25f99811652d3229', 'fa2ca7678c0831d9'],
          'caption=a_cname/sl/s0': ['52af670e12bb33bb', '9e2097480f443cc2'],
          'caption=full/clip/s0': ['3c601338b21ce994', '0a960a9749f1f7cd'],
          'caption=full/sl/s0': ['52af670e12bb33bb', '9e2097480f443cc2'],
          'imbalance=balanced/clip/s0': ['39cbcf4888698af0', '84bb27a1e215bd04'],
          'imbalance=balanced/sl/s0': ['d9315779c936af05', 'c36f2d7fa92749b4'],
          'imbalance=natural/clip/s0': ['3c601338b21ce994', '0a960a9749f1f7cd'],
          'imbalance=natural/sl/s0': ['52af670e12bb33bb', '9e2097480f443cc2']},
 'vocab': 'a3aeeba032568692'}
MATCH = {'bag_mine': {'frequency': 'ca93b33cd0fea739', 'match': '2d4b283f247d07ad', 'vocab': 'a3aeeba032568692'},
 'phrase': {'frequency': '1ccf980f79fc7ee4', 'match': '77921cd8c7d273af', 'vocab': 'a3aeeba032568692'}}


def study_keys(graph) -> dict:
    keys = {stage: graph.key(stage) for stage in ("vocab", "corpus", "match", "frequency")}
    keys["curate"] = {n.label: n.key for n in graph.of("curate")}
    if graph.report.key is not None:
        keys["runs"] = {n.label: [n.upstream["train"].key, n.key] for n in graph.evaluations}
        keys["report"] = graph.report.key
    return keys


def test_default_study_keys_are_unchanged():
    assert study_keys(plan_study(load_spec(default_spec_path()))) == DEFAULT


def test_tiny_study_keys_are_unchanged(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    graph = plan_study(load_spec(spec))
    assert graph.report.key is None  # training keys hash the subsets' content: unknown before curation
    ws = Workspace(tmp_path / "ws")
    run_local(ws, graph.of("curate"), workers=1)
    assert resolve_all(graph.nodes, ws) == []
    assert study_keys(graph) == TINY


@pytest.mark.parametrize("method,corpus", [("phrase", None), ("bag", "mine")])
def test_match_keys_are_unchanged(tmp_path, method, corpus):
    captions = tmp_path / "caps.csv"
    captions.write_text("sample_id,caption\n1,a photo of a goldfish in a bowl\n2,my tabby cat on the sofa\n"
                        "3,two golden retrievers and a tench\n4,nothing here\n")
    frequency = plan_match(captions, "imagenet1k", method, corpus=corpus)
    built = run_local(Workspace(tmp_path / "ws"), [frequency], workers=1)
    assert {stage: art.key for stage, art in built.items()} == MATCH["phrase" if corpus is None else "bag_mine"]


def test_the_readmes_example_stage_is_one_module_and_one_registry_line(tmp_path, monkeypatch):
    """The README's architecture section claims a new stage is one module + one registry line: run its example."""
    import re
    import types

    import pipeline.stages as S

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = re.search(r"```python\n# pipeline/stages/openworld.py\n(.*?)```", readme, re.S).group(1)
    module = types.ModuleType("openworld")
    exec(compile(code, "openworld.py", "exec"), module.__dict__)
    monkeypatch.setitem(S.REGISTRY, "openworld", module.OpenWorldStage())  # the registry line
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_SPEC.replace("base: {imbalance: natural, caption: full}",
                                      "base: {imbalance: natural, caption: full, open_world: true}"))
    curate = plan_study(load_spec(spec)).of("curate")[0]
    built = run_local(Workspace(tmp_path / "ws"), [module.openworld_node(curate)], workers=1)
    assert built["openworld"].status == "ran" and built["curate"].status == "ran"
    assert built["openworld"].manifest()["rows"]["open"] > 0
