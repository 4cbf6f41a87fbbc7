"""Each curation factor's defining property, checked on the subset itself (issue: curated subsets for every factor)."""
from __future__ import annotations

import collections
import math

import numpy as np
import pytest

from tailstudy.errors import SpecError
from tailstudy.frequency import reference_counts
from tailstudy.spec import SubsetSpec, load_spec
from tests.test_curate import World

# a larger pool so that shapes are visible: 8 classes, 3..200 samples each
BIG = {1: 200, 2: 120, 3: 80, 4: 50, 5: 30, 6: 12, 7: 6, 8: 3}
BIG_NAMES = {1: "tench", 2: "goldfish", 3: "great white shark", 4: "tiger shark", 5: "hammerhead shark",
             6: "electric ray", 7: "stingray", 8: "rooster", 99: "hen"}


@pytest.fixture(scope="module")
def big() -> World:
    return World(BIG, n_ambiguous=0)


def run(world: World, seed: int = 0, **level):
    from tailstudy.curate import curate

    return curate(world.captions, world.matches, world.targets, BIG_NAMES, SubsetSpec(**level), seed,
                  {c: (n, f"{n} fish") for c, n in BIG_NAMES.items()})


def class_counts(manifest) -> dict[int, int]:
    return dict(collections.Counter(x for x in manifest.column("label").to_pylist() if x is not None))


def test_exponential_reaches_the_asked_max_min_ratio(big):
    manifest, _, stats = run(big, imbalance={"exponential": 20})
    counts = class_counts(manifest)
    ranked = sorted(BIG, key=lambda c: -BIG[c])  # the natural head stays the head
    n = [counts[c] for c in ranked]
    assert n == sorted(n, reverse=True)
    assert 20 * 0.8 <= n[0] / n[-1] <= 20 * 1.25
    # geometric: consecutive ratios are all about 20 ** (1/7)
    step = 20 ** (1 / 7)
    for a, b in zip(n, n[1:]):
        assert abs(a / b - step) < 0.35
    assert sum(n) == pytest.approx(sum(BIG.values()), abs=len(BIG))
    assert stats["rho_target"] == pytest.approx(1.0)


def test_match_follows_a_reference_corpus_shape(big):
    table = reference_counts("laion400m")
    manifest, _, stats = run(big, imbalance={"match": "laion400m"})
    counts = class_counts(manifest)
    ref = {c: table[BIG_NAMES[c]] for c in BIG}
    # ordered as the reference orders them, and proportional to it (floor, at least 1)
    total = sum(BIG.values())
    for c in BIG:
        expected = max(1, math.floor(ref[c] / sum(ref.values()) * total))
        assert counts[c] == expected
    assert stats["rho_target"] > 0.95  # below 1 only through ties among classes floored to the same count


def test_cap_keeps_each_class_at_most_t_in_expectation_with_the_stated_probabilities(big):
    t = 25
    means = collections.defaultdict(float)
    seeds = range(40)
    for seed in seeds:
        for c, n in class_counts(run(big, seed=seed, imbalance={"cap": t})[0]).items():
            means[c] += n / len(seeds)
    for c, available in BIG.items():
        expected = min(available, t)  # available * t / max(available, t)
        if available <= t:
            assert means[c] == pytest.approx(available)  # probability 1: every sample kept
        else:
            sd = math.sqrt(available * (t / available) * (1 - t / available) / len(seeds))
            assert abs(means[c] - expected) < 4 * sd + 0.5


def label_less(manifest) -> set[str]:
    return {s for s, lab in zip(manifest.column("sample_id").to_pylist(), manifest.column("label").to_pylist())
            if lab is None}


def test_cap_keeps_multi_concept_captions_when_any_draw_keeps_them():
    # 4 captions match both 1 and 2; class 1 then has 8 matching captions <= t: its draw keeps each with p = 1
    sure = World({1: 4, 2: 300}, n_ambiguous=4, n_unmatched=0, n_other_only=0)
    for seed in range(5):
        assert label_less(run(sure, seed=seed, imbalance={"cap": 10}, open_world=True)[0]) == sure.ambiguous
    # 40 captions match both: p1 = 10/44, p2 = 10/340, kept with 1 - (1 - p1)(1 - p2)
    world = World({1: 4, 2: 300}, n_ambiguous=40, n_unmatched=0, n_other_only=0)
    p = 1 - (1 - 10 / 44) * (1 - 10 / 340)
    kept = [len(label_less(run(world, seed=seed, imbalance={"cap": 10}, open_world=True)[0])) for seed in range(30)]
    sd = math.sqrt(40 * p * (1 - p) / len(kept))
    assert abs(np.mean(kept) - 40 * p) < 4 * sd
    # without open_world they never enter: they have no single label
    assert all(x is not None for x in run(world, imbalance={"cap": 10})[0].column("label").to_pylist())


@pytest.mark.parametrize("ceil", [0, 2])
def test_trim_tail_cuts_exactly_the_k_rarest_classes(big, ceil):
    manifest, freq, stats = run(big, trim_tail={"last_k": 3, "ceil": ceil})
    counts = dict(zip(freq.column("concept_id").to_pylist(), freq.column("count").to_pylist()))
    assert sorted(stats["trimmed_classes"]) == [6, 7, 8]
    for c in (6, 7, 8):
        assert counts[c] == min(BIG[c], ceil)
    for c in (1, 2, 3, 4, 5):
        assert counts[c] == BIG[c]
    assert len(counts) == len(BIG)  # trimmed classes stay in the class list (evaluated zero-/few-shot)


def test_concept_breadth_random_named_and_unknown(big):
    _, freq, _ = run(big, concepts=3)
    chosen = freq.column("concept_id").to_pylist()
    assert len(chosen) == 3 and set(chosen) <= set(BIG)
    assert run(big, concepts=3)[1].column("concept_id").to_pylist() == chosen  # seeded
    manifest, freq, _ = run(big, concepts=["Goldfish", "stingray"])
    assert freq.column("concept_id").to_pylist() == [2, 7]
    assert set(class_counts(manifest)) == {2, 7}
    with pytest.raises(SpecError, match="unknown class 'axolotl'"):
        run(big, concepts=["goldfish", "axolotl"])
    with pytest.raises(SpecError, match="9 classes asked"):
        run(big, concepts=9)
    with pytest.raises(SpecError, match="imagenet100 shares"):
        run(big, concepts="imagenet100")  # ids 1..8 are not ImageNet-100 classes


def test_template_captions_use_the_80_prompts_and_synonyms(big):
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    manifest, _, _ = run(big, caption="templates")
    prompts = {c: {t(BIG_NAMES[c]) for t in OPENAI_IMAGENET_TEMPLATES} for c in BIG}
    used = set()
    for cap, lab in zip(manifest.column("caption").to_pylist(), manifest.column("label").to_pylist()):
        assert cap in prompts[lab]
        used.add(cap)
    assert len(used) > 100  # templates vary per sample
    manifest, _, _ = run(big, caption="synonym_templates")
    syn_prompts = {c: {t(s) for t in OPENAI_IMAGENET_TEMPLATES for s in (n, f"{n} fish")} for c, n in BIG_NAMES.items()}
    caps = list(zip(manifest.column("caption").to_pylist(), manifest.column("label").to_pylist()))
    assert all(cap in syn_prompts[lab] for cap, lab in caps)
    assert any("fish." in cap for cap, _ in caps) and any("fish." not in cap for cap, _ in caps)


def test_field_combinations_and_the_same_samples_across_variants(big):
    base, _, _ = run(big, caption="full")
    combo, _, _ = run(big, caption="title+tags")
    assert base.select(["sample_id", "copy", "label"]).equals(combo.select(["sample_id", "copy", "label"]))
    for sid, cap, lab in zip(combo.column("sample_id").to_pylist(), combo.column("caption").to_pylist(),
                             combo.column("label").to_pylist()):
        row = big.by_id[sid]
        assert cap == f"{BIG_NAMES[lab]}. {row['title']}. {row['tags']}"


@pytest.mark.parametrize("level, fragment", [
    ("{zipf: 0}", "zipf"),
    ("{exponential: 0.5}", "exponential"),
    ("{match: no_such_corpus}", "no reference frequency table 'no_such_corpus'"),
    ("{cap: 0}", "cap"),
    ("shouting", "unknown imbalance 'shouting'"),
])
def test_impossible_imbalance_levels_are_one_line_spec_errors(tmp_path, level, fragment):
    path = tmp_path / "s.yaml"
    path.write_text(f"name: x\nfactors:\n  imbalance: [natural, {level}]\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "factors.imbalance[1]" in str(info.value) and fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("factor, level, fragment", [
    ("trim_tail", "{last_k: 3, ceil: -1}", "ceil"),
    ("concepts", "1", "at least 2"),
    ("concepts", "imagenet5", "unknown class list"),
    ("caption", "title+title", "unknown caption variant"),
])
def test_other_impossible_levels(tmp_path, factor, level, fragment):
    path = tmp_path / "s.yaml"
    path.write_text(f"name: x\nfactors:\n  {factor}: [{level}]\n")
    with pytest.raises(SpecError, match=fragment):
        load_spec(path)


def test_scale_larger_than_the_pool_is_a_spec_error(big):
    with pytest.raises(SpecError, match="samples asked, the pool at this level has 501"):
        run(big, scale=600)


def test_a_subset_shared_by_two_studies_has_one_stage_key(tmp_path):
    from tailstudy.stages import plan_study

    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("name: first\nfactors:\n  imbalance: [natural, balanced]\nlearners: [sl]\n")
    b.write_text("name: second\nfactors:\n  imbalance: [balanced, {zipf: 2.0}]\nlearners: [clip]\n")
    ka, kb = plan_study(load_spec(a)).subset_keys, plan_study(load_spec(b)).subset_keys
    assert ka["imbalance=balanced"] == kb["imbalance=balanced"]
    assert ka["imbalance=natural"] not in kb.values()


def test_diversity_threshold_keeps_only_captions_similar_enough_to_the_definition(big):
    import pyarrow as pa

    from tailstudy.curate import curate

    scores = np.random.default_rng(0).uniform(0.3, 0.9, big.matches.num_rows)
    semantic = big.matches.append_column("method", pa.array(["semantic"] * big.matches.num_rows)) \
        .append_column("score", pa.array(scores, pa.float32()))
    keep = {s for s, c, sc in zip(semantic.column("sample_id").to_pylist(), semantic.column("concept_id").to_pylist(),
                                  scores) if sc >= np.float32(0.6)}
    manifest, _, _ = curate(big.captions, semantic, big.targets, BIG_NAMES, SubsetSpec(diversity={"threshold": 0.6}), 0)
    ids = set(manifest.column("sample_id").to_pylist())
    assert ids and ids <= keep
    loose, _, _ = curate(big.captions, semantic, big.targets, BIG_NAMES, SubsetSpec(diversity={"threshold": 0.3}), 0)
    assert len(loose) > len(manifest)
    with pytest.raises(SpecError, match="semantic"):
        run(big, diversity={"threshold": 0.6})  # phrase matches carry no similarity


def test_diversity_threshold_needs_the_semantic_matcher_in_the_spec(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nfactors:\n  diversity: [1.0, {threshold: 0.6}]\n")
    with pytest.raises(SpecError, match="needs matching"):
        load_spec(path)
    path.write_text("name: x\nmatching: {method: semantic}\nfactors:\n  diversity: [1.0, {threshold: 0.6}]\n")
    assert load_spec(path).factors["diversity"][1] == {"threshold": 0.6}
