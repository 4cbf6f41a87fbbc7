"""Stage keys are a promise: the keys below were computed by the code before the stages became a graph (commit
f12fccb, pipeline/stages.py), so a workspace built by it is reused, not rebuilt. Change a pin only together with
the stage's VERSION (and say so next to it)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tailstudy.spec import default_spec_path, load_spec
from tailstudy.stages import plan_match, plan_study, resolve_all, run_local
from tailstudy.store import Workspace
from tests.conftest import TINY_SPEC

# Re-pinned with issue 13's version bumps: world 3 is the default corpus (new content: corpus, match, frequency keys);
# CURATE_VERSION 3 (prefixed `full`), TRAIN_VERSION 2 (logit-scale cap and init), then issue 10's TRAIN_VERSION 3
# (streamed data, open_clip augmentation) and `max_steps` in every training key, EVALUATE_VERSION 3 (fixed eval
# classes, corpus rho, per-class NC), REPORT_VERSION 3 (claims table).
# Re-pinned with issues 22 and 24: world 4 is the default corpus (web-like depiction titles: new corpus, so new match
# and frequency keys), the default study evaluates 50 images per class and trains on template captions instead of
# a_cname; CURATE_VERSION 4 (name_prefix: where_missing), TRAIN_VERSION 4 (AdamW without decay on gains, biases and
# logit_scale; one DataLoader data path; heads), EVALUATE_VERSION 4 (top1_caption_prompt), REPORT_VERSION 4 (claims
# per metric). Worlds 2 and 3 keep their corpus, match and frequency keys (tests below): a workspace of the previous
# default re-runs from curate on.
# REPORT_VERSION 6 (the rank-frequency legend names its body fit; the Corpus table says its Zipf exponent is over all
# ranks): only the report key below moves; every other stage is reused.
PREVIOUS_PER_CLASS = 30  # the previous default study evaluated (and so rendered) 30 images per class
WORLD_2 = {'corpus': 'c88b23bc2cbbd22a'}
WORLD_3 = {'corpus': '9280fe6bce62a65c', 'match': 'e0fbfe4a36cfa4fa', 'frequency': 'e787e0f26e8bae25'}
DEFAULT = {'corpus': '810ca81f59518e18',
 'curate': {'caption=full': 'd449d51c7fe472ed',
            'caption=templates': '0682d3f62b9ba3a9',
            'imbalance=balanced': '5c4262185d4226fb',
            'imbalance=natural': 'd449d51c7fe472ed'},
 'frequency': '0673897a0816171d',
 'match': '1f3f933e1416aff6',
 'vocab': 'a3aeeba032568692'}
TINY = {'corpus': '9ea34b503cf86e2b',
 'curate': {'caption=a_cname': 'ebef708ab7581334',
            'caption=full': 'f4d4518b545e3e1c',
            'imbalance=balanced': 'ba277a5c04612660',
            'imbalance=natural': 'f4d4518b545e3e1c'},
 'frequency': 'd384d18caf79f93f',
 'match': 'ca1d53b806d01db3',
 'report': '4d71c01508c092b2',
 'runs': {'caption=a_cname/clip/s0': ['fcd874b5e9fb8462', '958dcfe8418177d5'],
          'caption=a_cname/sl/s0': ['c918bfc251ef6aef', '5803b0a40022ffb1'],
          'caption=full/clip/s0': ['d59625a27ea5e78d', '4e22990446074418'],
          'caption=full/sl/s0': ['c918bfc251ef6aef', '5803b0a40022ffb1'],
          'imbalance=balanced/clip/s0': ['576ac1f324ac5a3d', 'a8a82f661133dc8b'],
          'imbalance=balanced/sl/s0': ['2213d50728a0af7f', 'dc1ed00acfe00602'],
          'imbalance=natural/clip/s0': ['d59625a27ea5e78d', '4e22990446074418'],
          'imbalance=natural/sl/s0': ['c918bfc251ef6aef', '5803b0a40022ffb1']},
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


@pytest.mark.parametrize("world,pins", [(2, WORLD_2), (3, WORLD_3)])
def test_earlier_worlds_keep_their_keys_when_selected_explicitly(world, pins):
    import yaml

    from tailstudy.spec import parse_spec

    data = yaml.safe_load(default_spec_path().read_text())
    data["corpus"]["world"] = world
    data["evaluate"]["per_class"] = PREVIOUS_PER_CLASS
    graph = plan_study(parse_spec(data))
    assert {stage: graph.key(stage) for stage in pins} == pins


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
