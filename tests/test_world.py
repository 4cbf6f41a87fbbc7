"""The synthetic world generator: determinism, splits, frequencies, captions, families and images."""
from __future__ import annotations

import collections
import io
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tailstudy.corpus import captions as world_captions
from tailstudy.corpus import synthetic
from tailstudy.corpus.shards import decode_image, iter_shard
from tailstudy.corpus.synthetic import generate
from tailstudy.matching.phrase import PhraseMatcher
from tailstudy.spec import CorpusSpec, EvaluateSpec
from tailstudy.vocab import imagenet1k

CORPUS = dict(concepts=10, open_concepts=5, samples=1200, open_samples=150, min_count=8, image_size=24,
              unnamed_frac=0.3, seed=3)
PER_CLASS = 5


def _generate(out: Path, **overrides) -> Path:
    generate(CorpusSpec(**{**CORPUS, **overrides}), EvaluateSpec(per_class=PER_CLASS), out)
    return out


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("world") / "a")


@pytest.fixture(scope="module")
def world(world_dir):
    return json.loads((world_dir / "world.json").read_text())


@pytest.fixture(scope="module")
def captions(world_dir):
    return pq.read_table(world_dir / "captions.parquet").to_pylist()


@pytest.fixture(scope="module")
def truth(world_dir):
    return pq.read_table(world_dir / "truth.parquet").to_pylist()


@pytest.fixture(scope="module")
def matcher():
    return PhraseMatcher(imagenet1k())


# ---------------------------------------------------------------- determinism

def _artifact_files(root: Path) -> list[Path]:
    names = ["captions.parquet", "eval.parquet", "truth.parquet", "world.json"]
    names += sorted(str(p.relative_to(root)) for p in (root / "shards").glob("*.tar"))
    return [Path(n) for n in names]


def test_same_config_gives_byte_identical_artifacts(world_dir, tmp_path):
    again = _generate(tmp_path / "b")
    files = _artifact_files(world_dir)
    assert _artifact_files(again) == files
    assert any(str(f).startswith("shards/train-") for f in files)
    assert Path("shards/eval-00000.tar") in files
    for rel in files:
        assert (again / rel).read_bytes() == (world_dir / rel).read_bytes(), f"{rel} differs between two runs"
    # nothing but the artifacts (no temp files left behind)
    assert sorted(p.name for p in (again / "shards").iterdir()) == sorted(p.name for p in (world_dir / "shards").iterdir())


def test_different_seed_gives_different_captions(captions, tmp_path):
    other = _generate(tmp_path / "c", seed=CORPUS["seed"] + 1)
    other_captions = pq.read_table(other / "captions.parquet").column("caption").to_pylist()
    assert other_captions != [r["caption"] for r in captions]


# ---------------------------------------------------------------- splits and frequencies

def test_targets_and_open_concepts(world):
    assert len(world["targets"]) == CORPUS["concepts"]
    assert len(world["open"]) == CORPUS["open_concepts"]
    assert not set(world["targets"]) & set(world["open"])
    by_id = {c["concept_id"]: c for c in world["concepts"]}
    assert len(by_id) == CORPUS["concepts"] + CORPUS["open_concepts"]
    assert all(by_id[t]["is_target"] for t in world["targets"])
    assert not any(by_id[o]["is_target"] for o in world["open"])
    names = imagenet1k().by_id()
    for cid, c in by_id.items():
        assert c["name"] == names[cid].name


def test_eval_split_is_balanced_over_targets_only(world, world_dir):
    ev = pq.read_table(world_dir / "eval.parquet").to_pylist()
    per_concept = collections.Counter(r["concept_id"] for r in ev)
    assert per_concept == {t: PER_CLASS for t in world["targets"]}
    assert not set(per_concept) & set(world["open"])
    assert len({r["sample_id"] for r in ev}) == len(ev)
    # every eval row points at an image in the eval shard, and the eval shard holds nothing else
    shard_keys = {key for key, members in iter_shard(world_dir / "shards" / "eval-00000.tar") if "png" in members}
    assert {r["shard"] for r in ev} == {"eval-00000.tar"}
    assert shard_keys == {r["key"] for r in ev}


def test_counts_respect_min_count_and_match_truth(world, truth):
    counts = {c["concept_id"]: c["count"] for c in world["concepts"]}
    for t in world["targets"]:
        assert counts[t] >= CORPUS["min_count"], f"target {t} has only {counts[t]} samples"
    observed = collections.Counter(r["concept_id"] for r in truth)
    assert observed == {cid: n for cid, n in counts.items() if n > 0}
    target_total = sum(counts[t] for t in world["targets"])
    # the profile is floored to `samples` (at most one lost per concept); min_count can only add to it
    assert target_total >= CORPUS["samples"] - CORPUS["concepts"]
    assert sum(counts[o] for o in world["open"]) <= CORPUS["open_samples"] + CORPUS["open_concepts"]
    is_target = {c["concept_id"]: c["is_target"] for c in world["concepts"]}
    assert all(r["is_target"] == is_target[r["concept_id"]] for r in truth)


def test_truth_aligns_with_captions(captions, truth):
    assert [r["sample_id"] for r in truth] == [r["sample_id"] for r in captions]
    assert len({r["sample_id"] for r in captions}) == len(captions)
    for r in captions:
        parts = [p for p in (r["title"], r["tags"], r["description"]) if p]
        assert r["caption"] == ". ".join(parts)


def test_named_fraction_close_to_one_minus_unnamed_frac(truth):
    frac = sum(r["named"] for r in truth) / len(truth)
    assert abs(frac - (1 - CORPUS["unnamed_frac"])) < 0.04, frac


# ---------------------------------------------------------------- captions vs the phrase matcher

def test_named_captions_match_their_concept_and_unnamed_never_do(captions, truth, matcher):
    wrong = []
    for cap, t in zip(captions, truth):
        hit = t["concept_id"] in matcher.match_one(cap["caption"])
        if hit != t["named"]:
            wrong.append((cap["caption"], t["concept_id"], t["named"]))
    assert not wrong, wrong[:5]


def test_no_caption_matches_another_target(captions, truth, world, matcher):
    targets = set(world["targets"])
    wrong = []
    for cap, t in zip(captions, truth):
        others = (set(matcher.match_one(cap["caption"])) & targets) - {t["concept_id"]}
        if others:
            wrong.append((cap["caption"], t["concept_id"], sorted(others)))
    assert not wrong, wrong[:5]


def test_shard_text_equals_caption(world_dir, captions):
    by_key = {r["key"]: r for r in captions}
    seen = 0
    for shard in sorted((world_dir / "shards").glob("train-*.tar")):
        for key, members in iter_shard(shard):
            row = by_key[key]
            assert row["shard"] == shard.name
            assert members["txt"].decode() == row["caption"]
            fields = json.loads(members["json"])
            assert fields == {"title": row["title"], "tags": row["tags"], "description": row["description"]}
            seen += 1
    assert seen == len(captions)


# ---------------------------------------------------------------- families

def test_families_are_near_twins_and_attributes_unique(world):
    attrs = [(c["shape"], c["colour"], c["texture"]) for c in world["concepts"]]
    assert len(set(attrs)) == len(attrs), "two concepts look identical"
    for c in world["concepts"]:
        assert c["shape"] in synthetic.SHAPES
        assert c["colour"] in synthetic.COLOURS
        assert c["texture"] in synthetic.TEXTURES
    families = collections.defaultdict(list)
    for c, a in zip(world["concepts"], attrs):
        families[c["family"]].append(a)
    assert any(len(m) >= 2 for m in families.values())
    for fam, members in families.items():
        assert len(members) <= synthetic.FAMILY_SIZE
        for a, b in itertools.combinations(members, 2):
            shared = sum(x == y for x, y in zip(a, b))
            assert shared == 2, f"family {fam}: {a} and {b} share {shared} attributes"


# ---------------------------------------------------------------- images

def test_images_decode_to_the_configured_size(world_dir):
    size = CORPUS["image_size"]
    n = 0
    for shard in sorted((world_dir / "shards").glob("*.tar")):
        for key, members in iter_shard(shard):
            raw = members["png"]
            with Image.open(io.BytesIO(raw)) as img:  # the stored image itself, before any resizing
                assert img.size == (size, size), key
                assert img.mode == "RGB"
                native = np.asarray(img.convert("RGB"))
            pixels = decode_image(raw, size)
            assert pixels.shape == (size, size, 3) and pixels.dtype.name == "uint8"
            assert (pixels == native).all()
            assert pixels.std() > 0, f"{key} is a blank image"
            n += 1
    assert n > CORPUS["samples"]


# ---------------------------------------------------------------- filler words name no concept

def _filler_words() -> list[str]:
    texts = [*synthetic.SHAPES, *synthetic.COLOURS, *synthetic.TEXTURES, *world_captions.GENERIC_TAGS,
             *synthetic.POSITIONS.values(), "on a dark background", "on a grey background"]
    texts += [t.replace("{name}", " ").replace("{n}", "1234") for t in world_captions.NAMED_TITLES + world_captions.UNNAMED_TITLES]
    words = set()
    for t in texts:
        words.update(re.findall(r"[A-Za-z0-9]+", t))
    return sorted(words)


def test_filler_phrases_and_words_match_no_concept(matcher):
    texts = [*synthetic.SHAPES, *synthetic.COLOURS, *synthetic.TEXTURES, *world_captions.GENERIC_TAGS,
             *synthetic.POSITIONS.values()]
    texts += [t.replace("{name}", "").replace("{n}", "1234") for t in world_captions.NAMED_TITLES + world_captions.UNNAMED_TITLES]
    for text in texts:
        assert matcher.match_one(text) == [], text
    words = _filler_words()
    assert {"circle", "red", "checkered", "wallpaper", "untitled", "sale"} <= set(words)
    for w in words:
        assert matcher.match_one(w) == [], w
    # fields are joined, so neighbouring filler words must not form a concept name either
    for a, b in itertools.permutations(words, 2):
        assert matcher.match_one(f"{a} {b}") == [], f"{a} {b}"


# ---------------------------------------------------------------- world 3: families follow WordNet

def test_world_3_families_are_runs_of_wordnet_order_and_world_2_is_reachable(world, tmp_path):
    paths = synthetic.hypernym_paths()
    key_of = {c.concept_id: c.key for c in imagenet1k().concepts}
    concepts = sorted(world["concepts"], key=lambda c: paths[key_of[c["concept_id"]]])
    families = [c["family"] for c in concepts]
    # in hierarchy order, every family is one contiguous run (its members are each other's nearest relatives)
    runs = [f for i, f in enumerate(families) if i == 0 or f != families[i - 1]]
    assert len(runs) == len(set(families))
    assert world["world"] == 4  # from world 3 on
    old = json.loads((_generate(tmp_path / "w2", world=2) / "world.json").read_text())
    assert "world" not in old
    # same concepts, targets and counts; only the looks are assigned differently
    assert [(c["concept_id"], c["count"]) for c in old["concepts"]] == \
        [(c["concept_id"], c["count"]) for c in world["concepts"]]
    assert [c["family"] for c in old["concepts"]] != [c["family"] for c in world["concepts"]]


def test_world_2_keeps_its_corpus_key_when_selected_explicitly():
    assert "world" not in CorpusSpec(world=2).model_dump()
    assert CorpusSpec(world=2).model_dump() != CorpusSpec().model_dump()


# ---------------------------------------------------------------- world 4: web alt-text frames around the name

def test_world_4_titles_put_the_name_inside_depiction_phrases_at_the_stated_rate():
    rng = np.random.default_rng(0)
    titles = [world_captions.named_title("tabby cat", 4, rng) for _ in range(4000)]
    assert all("tabby cat" in t for t in titles)
    plain = {t.format(name="tabby cat") for t in world_captions.NAMED_TITLES}
    framed = [t for t in titles if t not in plain]
    # DEPICTION_RATE of the titles are framed (a few framed ones can coincide with a plain title: counted as plain)
    assert abs(len(framed) / len(titles) - world_captions.DEPICTION_RATE) < 0.03
    words = collections.Counter(w for t in framed for w in t.replace("tabby cat", "").split())
    assert {"photo", "of", "a", "the", "my"} <= set(words) and words["photo"] > words["drawing"] > 0
    # world 3 never draws a frame: its captions (and corpus keys) stay as they were
    rng = np.random.default_rng(0)
    assert all(world_captions.named_title("tabby cat", 3, rng) in plain for _ in range(200))


def test_world_4_frame_words_match_no_concept(matcher):
    words = [*world_captions.PHOTO_MEDIA, *world_captions.ART_MEDIA, *world_captions.OBJECT_FORMS, *world_captions.ADJECTIVES,
             *world_captions.DETERMINERS]
    frames = [f.format(det0="a ", medium="photo", det="the", adj="", name="", form="toy")
              for f in world_captions.DEPICTION_FRAMES + world_captions.OBJECT_FRAMES]
    for text in words + frames:
        assert matcher.match_one(text) == [], text


def test_world_4_is_the_default_and_the_older_worlds_keep_their_keys():
    assert CorpusSpec().world == 4 and CorpusSpec().model_dump()["world"] == 4
    assert CorpusSpec(world=3).model_dump()["world"] == 3
