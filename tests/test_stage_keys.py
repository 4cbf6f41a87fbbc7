"""Stage keys are a promise: the keys below were computed by the code before the stages became a graph (commit
f12fccb, pipeline/stages.py), so a workspace built by it is reused, not rebuilt. Change a pin only together with
the stage's VERSION (and say so next to it)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tailstudy.spec import default_spec_path, load_spec
from tailstudy.stages import cell_id, plan_match, plan_study, resolve_all, run_local
from tailstudy.store import Workspace
from tests.conftest import TINY_SPEC

# Re-pinned with issue 13's version bumps: world 3 is the default corpus (new content: corpus, match, frequency keys);
# CURATE_VERSION 3 (prefixed `full`), TRAIN_VERSION 2 (logit-scale cap and init), then issue 10's TRAIN_VERSION 3
# (streamed data, open_clip augmentation) and `max_steps` in every training key, EVALUATE_VERSION 3 (fixed eval
# classes, corpus rho, per-class NC), REPORT_VERSION 3 (claims table). World 2 keeps its old corpus key (test below).
WORLD_2_CORPUS = 'c88b23bc2cbbd22a'
DEFAULT = {'corpus': '9280fe6bce62a65c',
 'curate': {'caption=a_cname': '33b1567bad37e8c2',
            'caption=full': 'fcd1768fe108faae',
            'imbalance=balanced': '6a5ffe696f3be61a',
            'imbalance=natural': 'fcd1768fe108faae'},
 'frequency': 'e787e0f26e8bae25',
 'match': 'e0fbfe4a36cfa4fa',
 'vocab': 'a3aeeba032568692'}
TINY = {'corpus': '341026cb964efcda',
 'curate': {'caption=a_cname': 'cd8d1d7e102b93e5',
            'caption=full': 'a9a0d7411f156b0d',
            'imbalance=balanced': '871da7c795056484',
            'imbalance=natural': 'a9a0d7411f156b0d'},
 'frequency': '9f0f0b160da4b3ee',
 'match': '17cbe84fe84fcb64',
 'report': '8cb19e5523faaa2c',
 'runs': {'caption=a_cname/clip/s0': ['9d30a51d5f7841b5', '90f5d8ef5f0d4695'],
          'caption=a_cname/sl/s0': ['254d16c62b409e93', '67059e8686e16e17'],
          'caption=full/clip/s0': ['c301e6f10696decc', '18ee5698f303b298'],
          'caption=full/sl/s0': ['254d16c62b409e93', '67059e8686e16e17'],
          'imbalance=balanced/clip/s0': ['bcbe266f4bc4d6c5',
                                         'fd3c7c155841e2d9'],
          'imbalance=balanced/sl/s0': ['ac103432e4540ad3', '62967183edf6d64b'],
          'imbalance=natural/clip/s0': ['c301e6f10696decc', '18ee5698f303b298'],
          'imbalance=natural/sl/s0': ['254d16c62b409e93', '67059e8686e16e17']},
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


def test_world_2_keeps_its_corpus_key_when_selected_explicitly():
    import yaml

    from tailstudy.spec import parse_spec

    data = yaml.safe_load(default_spec_path().read_text())
    data["corpus"]["world"] = 2
    assert plan_study(parse_spec(data)).key("corpus") == WORLD_2_CORPUS


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

    import tailstudy.stages as S

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
