from pathlib import Path

import pytest

from tailstudy.errors import SpecError
from tailstudy.spec import SubsetSpec, ZipfProfile, default_spec_path, expand, level_label, load_spec, parse_spec


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_default_spec_loads_and_expands_one_factor_at_a_time():
    spec = load_spec(default_spec_path())
    cells = expand(spec)
    expected = sum(len(levels) for levels in spec.factors.values())
    assert len(cells) == expected
    for cell in cells:
        # every cell differs from base in at most its own factor
        diff = {k for k in SubsetSpec.model_fields if getattr(cell.subset, k) != getattr(spec.base, k)}
        assert diff <= {cell.factor}


def test_grid_expansion_is_the_full_product(tmp_path):
    spec = load_spec(write(tmp_path, "name: g\ngrid: true\nfactors:\n  imbalance: [natural, balanced, {zipf: 1.5}]\n"
                                     "  caption: [a_cname, full]\n"))
    cells = expand(spec)
    assert len(cells) == 6
    assert {c.level for c in cells} == {f"{i}+{c}" for i in ("natural", "balanced", "zipf=1.5") for c in ("a_cname", "full")}
    assert all(c.factor == "imbalance+caption" for c in cells)


def test_no_factors_gives_the_base_cell(tmp_path):
    cells = expand(load_spec(write(tmp_path, "name: b\n")))
    assert [(c.factor, c.level) for c in cells] == [("base", "base")]


def test_zipf_level_is_parsed_and_labelled(tmp_path):
    spec = load_spec(write(tmp_path, "name: z\nfactors:\n  imbalance: [{zipf: 2.0}]\n"))
    cell = expand(spec)[0]
    assert cell.subset.imbalance == ZipfProfile(zipf=2.0)
    assert cell.level == "zipf=2.0" == level_label({"zipf": 2.0})


@pytest.mark.parametrize("text, fragment", [
    ("name: x\ncorpus: {samplez: 10}\n", "corpus.samplez: unknown key"),
    ("name: x\nbogus: 1\n", "bogus: unknown key"),
    ("name: x\nfactors:\n  imbalanse: [natural]\n", "factors.imbalanse: unknown factor"),
    ("name: x\nfactors:\n  imbalance: [natural, {zipf: -1}]\n", "factors.imbalance[1]"),
    ("name: x\nfactors:\n  caption: [shouting]\n", "factors.caption[0]"),
    ("name: x\nlearners: [clip, resnet_magic]\n", "unknown learner 'resnet_magic'"),
    ("name: x\nfactors:\n  scale: [2.5]\n", "whole number"),
    ("name: x\nfactors:\n  imbalance: []\n", "at least one level"),
    ("corpus: {}\n", "name"),
    ("name: x\nevaluate: {classes: imagenet999}\n", "evaluate.classes"),
    ("name: x\ntrain: {head: bilinear}\n", "train.head"),
    ("name: x\ncorpus: {world: 1}\n", "corpus.world"),
    ("name: x\nlearners: [{name: v, learner: sl_sampled_vocab, train: {epochs: 3}}]\n",
     "learners[0].train.epochs: not an option of learner 'sl_sampled_vocab'"),
    ("name: x\nlearners: [{name: v, learner: sl_sampled_vocab, train: {num_to_sample: 1}}]\n",
     "learners[0].train.num_to_sample"),
    ("name: x\nlearners: [{name: v, learner: nope}]\n", "unknown learner 'nope'"),
    ("name: x\nlearners: [sl, {name: sl, learner: sl_sampled_vocab}]\n", "'sl' is listed twice"),
    ("name: x\nlearners: [{name: v, learner: sl, levels: [caption=title]}]\n", "learners[0].levels: 'caption=title'"),
    ("name: x\nlearners: [{name: 'a/b', learner: sl}]\n", "learners.0"),
])
def test_bad_specs_give_one_line_errors_naming_the_problem(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert fragment in message


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match=r"invalid YAML at line \d+"):
        load_spec(write(tmp_path, "name: x\nfactors: [\n"))
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        parse_spec(["a", "b"])


def test_the_paper_setup_is_the_default():
    from tailstudy.spec import StudySpec

    spec = StudySpec(name="d")
    assert spec.train.head == "cosine" and spec.evaluate.prompts == "templates" and spec.evaluate.classes == "all"
    assert spec.base.caption == "full" and spec.base.name_prefix
    paper = load_spec(Path(__file__).resolve().parent.parent / "data" / "studies" / "paper.yaml")
    assert len(paper.seeds) >= 3 and len(load_spec(default_spec_path()).seeds) == 3


def test_the_caption_ablation_trains_only_the_levels_the_paper_study_has_not():
    """data/studies/caption_fields.yaml promises that its title and full CLIP runs are the paper study's: same stage,
    key config and upstream all the way to the corpus, so the same keys (a workspace that ran the paper study trains
    only the two middle levels)."""
    from tailstudy.stages import plan_study
    from tailstudy.stages.registry import stage_of

    def signature(node):
        upstream = tuple(sorted((role, signature(up)) for role, up in node.upstream.items()))
        return node.stage, repr(stage_of(node).key_config(node.config)), upstream, tuple(sorted(node.given.items()))

    studies = Path(__file__).resolve().parent.parent / "data" / "studies"
    paper, ablation = ({signature(n): n.label for n in plan_study(load_spec(studies / f"{name}.yaml")).nodes
                        if n.stage == "train"} for name in ("paper", "caption_fields"))
    shared = sorted(label for sig, label in ablation.items() if sig in paper)
    assert len(ablation) == 20 and shared == sorted(f"caption={level}/clip/s{s}" for level in ("full", "title")
                                                    for s in range(5))


def test_old_section_names_are_read_the_same_with_one_line_each(tmp_path, capsys):
    """`eval:` and `models:` are the old names of `evaluate:` and `learners:`: same spec, same stage keys."""
    from tailstudy.stages import plan_study

    body = "corpus: {concepts: 10, samples: 200}\nfactors: {imbalance: [natural, balanced]}\nseeds: [0]\n"
    new = load_spec(write(tmp_path, f"name: x\nevaluate: {{per_class: 4}}\nlearners: [sl, clip]\n{body}"))
    assert capsys.readouterr().err == ""
    old_path = tmp_path / "old.yaml"
    old_path.write_text(f"name: x\neval: {{per_class: 4}}\nmodels: [sl, clip]\n{body}")
    old = load_spec(old_path)
    assert old == new and old.evaluate.per_class == 4 and old.learners == ["sl", "clip"]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "'eval:'" in lines[0] and "'evaluate:'" in lines[0] and "'learners:'" in lines[1]
    load_spec(old_path)  # said once per spec and process
    assert capsys.readouterr().err == ""
    keys = [[(n.stage, n.key) for n in plan_study(spec).nodes] for spec in (old, new)]
    assert keys[0] == keys[1] and any(key for _, key in keys[0])


def test_old_and_new_name_together_is_an_error():
    with pytest.raises(SpecError, match="both learners: and models:"):
        parse_spec({"name": "x", "models": ["sl"], "learners": ["sl"]})


def test_learner_variants_train_with_their_own_options_where_they_are_asked_to(tmp_path):
    """A variant is a registered learner with its own values of the options it declares, on the cells it names;
    a variant whose options equal the study's shares the plain learner's training runs (same keys)."""
    from tailstudy.stages import plan_study

    spec = load_spec(write(tmp_path, """name: v
corpus: {concepts: 10, samples: 200, open_samples: 20, open_concepts: 5}
factors: {imbalance: [natural, balanced]}
learners:
  - sl_sampled_vocab
  - {name: voc4, learner: sl_sampled_vocab, train: {num_to_sample: 4}, levels: [base]}
  - {name: same, learner: sl_sampled_vocab, levels: [imbalance=balanced]}
train: {num_to_sample: 8}
seeds: [0]
"""))
    runs = {r.name: r for r in spec.learner_runs()}
    assert runs["voc4"].learner == "sl_sampled_vocab" and runs["voc4"].train.num_to_sample == 4
    assert runs["sl_sampled_vocab"].train == spec.train
    graph = plan_study(spec)
    trained = {(n.config["cell"].level, n.config["learner"]) for n in graph.evaluations}
    assert trained == {("natural", "sl_sampled_vocab"), ("balanced", "sl_sampled_vocab"), ("natural", "voc4"),
                       ("balanced", "same")}
    from tailstudy.stages import REGISTRY

    keyed = {n.config["learner"]: REGISTRY["train"].key_config(n.config) for n in graph.of("train")}
    assert keyed["voc4"]["train"]["num_to_sample"] == 4 and keyed["same"] == keyed["sl_sampled_vocab"]
