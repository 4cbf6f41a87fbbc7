"""curate(): each factor's defining property, checked on the subset it returns, on hand-built caption/match tables."""
from __future__ import annotations

import collections
import math

import numpy as np
import pyarrow as pa
import pytest

from tailstudy.curate import curate
from tailstudy.errors import SpecError
from tailstudy.spec import SubsetSpec
from tailstudy.store import write_parquet

TARGETS = [10, 20, 30, 40]
OTHER = 99  # a matched concept that is not a target
NAMES = {10: "tench", 20: "goldfish", 30: "great white shark", 40: "tiger shark", OTHER: "hammerhead"}
# exclusive pool per class; deliberately not in concept-id order so that frequency rank != id order
POOL = {10: 6, 20: 20, 30: 4, 40: 10}


class World:
    """Hand-built captions + matches with the answer known by construction."""

    def __init__(self, pool: dict[int, int], n_ambiguous: int = 4, n_unmatched: int = 5, n_other_only: int = 2):
        self.members: dict[int, set[str]] = {c: set() for c in pool}
        self.ambiguous: set[str] = set()
        self.open: set[str] = set()
        rows, match_rows = [], []
        i = 0

        def new(kind: str) -> str:
            nonlocal i
            sid = f"s{i:04d}"
            desc = "" if i % 3 == 0 else f"a thing seen from the {kind} side"
            rows.append({"sample_id": sid, "caption": f"full caption {i} ({kind})", "title": f"title {i}",
                         "tags": f"tag{i}, misc", "description": desc})
            i += 1
            return sid

        for cid, n in pool.items():
            for j in range(n):
                sid = new(f"class {cid}")
                self.members[cid].add(sid)
                match_rows.append((sid, cid))
                if j == 0:  # also matches a non-target concept: still exactly one target
                    match_rows.append((sid, OTHER))
                if j == 1:  # the same target matched twice: still exactly one target
                    match_rows.append((sid, cid))
        classes = sorted(pool)
        for k in range(n_ambiguous):  # two (or three) different targets -> dropped
            sid = new("ambiguous")
            self.ambiguous.add(sid)
            pair = (classes[k % len(classes)], classes[(k + 1) % len(classes)])
            match_rows += [(sid, pair[0]), (sid, pair[1])]
            if k == 0:
                match_rows.append((sid, OTHER))
        for _ in range(n_unmatched):
            self.open.add(new("unmatched"))
        for _ in range(n_other_only):
            sid = new("other")
            self.open.add(sid)
            match_rows.append((sid, OTHER))
        # captions in a scrambled order, matches too: curate must not rely on either order
        order = np.random.default_rng(123).permutation(len(rows))
        rows = [rows[k] for k in order]
        self.captions = pa.table({k: pa.array([r[k] for r in rows], pa.string())
                                  for k in ("sample_id", "caption", "title", "tags", "description")})
        morder = np.random.default_rng(7).permutation(len(match_rows))
        self.matches = pa.table({"sample_id": pa.array([match_rows[k][0] for k in morder], pa.string()),
                                 "concept_id": pa.array([match_rows[k][1] for k in morder], pa.int32())})
        self.by_id = {r["sample_id"]: r for r in rows}
        self.targets = sorted(pool)

    def run(self, seed: int = 0, **level):
        return curate(self.captions, self.matches, self.targets, NAMES, SubsetSpec(**level), seed)


@pytest.fixture(scope="module")
def w() -> World:
    return World(POOL)


def labelled(manifest: pa.Table) -> list[dict]:
    return [r for r in manifest.to_pylist() if r["label"] is not None]


def class_counts(manifest: pa.Table) -> dict[int, int]:
    return dict(collections.Counter(r["label"] for r in labelled(manifest)))


def rows_of(manifest: pa.Table, cid: int) -> list[dict]:
    return [r for r in manifest.to_pylist() if r["label"] == cid]


def check_labels_are_true(w: World, manifest: pa.Table) -> None:
    for r in labelled(manifest):
        assert r["sample_id"] in w.members[r["label"]], r
    assert not {r["sample_id"] for r in manifest.to_pylist()} & w.ambiguous


# ---------------------------------------------------------------- imbalance

def test_natural_counts_are_exclusive_matches(w):
    manifest, freq, stats = w.run(imbalance="natural")
    assert manifest.column_names[:3] == ["sample_id", "copy", "label"]
    assert class_counts(manifest) == POOL
    for cid in TARGETS:
        assert {r["sample_id"] for r in rows_of(manifest, cid)} == w.members[cid]
    assert all(r["copy"] == 0 for r in manifest.to_pylist())
    assert manifest.column("label").null_count == 0  # no open-world rows unless asked
    check_labels_are_true(w, manifest)
    assert stats["repeated_samples"] == 0 and stats["open_world_samples"] == 0


@pytest.mark.parametrize("pool", [POOL, {10: 3, 20: 13, 30: 7, 40: 1}])
def test_balanced_classes_equal_with_copies_only_where_short(pool):
    w = World(pool)
    manifest, _, stats = w.run(imbalance="balanced")
    need = sum(pool.values()) // len(pool)  # 40 // 4 = 10; 24 // 4 = 6
    assert class_counts(manifest) == {c: need for c in pool}
    check_labels_are_true(w, manifest)
    repeated = 0
    for cid, available in pool.items():
        rows = rows_of(manifest, cid)
        distinct = {r["sample_id"] for r in rows}
        pairs = {(r["sample_id"], r["copy"]) for r in rows}
        assert len(pairs) == len(rows), "a (sample_id, copy) pair appears twice"
        if available >= need:
            assert all(r["copy"] == 0 for r in rows), cid
            assert len(distinct) == need
        else:
            assert distinct == w.members[cid]  # every available sample used before any repeat
            assert sum(r["copy"] == 0 for r in rows) == available
            assert max(r["copy"] for r in rows) > 0
            # repeats are spread evenly: no sample repeated twice before every sample was repeated once
            per_sample = collections.Counter(r["sample_id"] for r in rows)
            assert max(per_sample.values()) - min(per_sample.values()) <= 1
            repeated += need - available
    assert stats["repeated_samples"] == repeated


@pytest.mark.parametrize("alpha, expected", [
    # ranks by natural frequency: 20 (20), 40 (10), 10 (6), 30 (4); total 40
    # a=1: 40 * r^-1 / (25/12) = 19.2, 9.6, 6.4, 4.8 -> floors
    (1.0, {20: 19, 40: 9, 10: 6, 30: 4}),
    # a=2: 40 * r^-2 / (205/144) = 28.10, 7.02, 3.12, 1.76 -> floors
    (2.0, {20: 28, 40: 7, 10: 3, 30: 1}),
])
def test_zipf_follows_rank_power_law(w, alpha, expected):
    manifest, freq, _ = w.run(imbalance={"zipf": alpha})
    counts = class_counts(manifest)
    assert counts == expected
    ranked = sorted(POOL, key=lambda c: -POOL[c])
    total = sum(POOL.values())
    norm = sum(r ** -alpha for r in range(1, len(ranked) + 1))
    for rank, cid in enumerate(ranked, start=1):
        ideal = total * rank ** -alpha / norm
        assert abs(counts[cid] - ideal) < 1 or counts[cid] == 1, (cid, counts[cid], ideal)
    assert [counts[c] for c in ranked] == sorted(counts.values(), reverse=True)
    check_labels_are_true(w, manifest)


# ---------------------------------------------------------------- scale

@pytest.mark.parametrize("scale", [0.5, 20])
def test_scale_fraction_and_count_hit_the_total(w, scale):
    manifest, _, _ = w.run(imbalance="natural", scale=scale)
    counts = class_counts(manifest)
    assert sum(counts.values()) == 20
    # proportional: 6/2, 20/2, 4/2, 10/2
    assert counts == {10: 3, 20: 10, 30: 2, 40: 5}
    assert all(r["copy"] == 0 for r in manifest.to_pylist())
    check_labels_are_true(w, manifest)


@pytest.mark.parametrize("scale", [0.1, 4])
def test_scale_keeps_every_class(w, scale):
    manifest, _, _ = w.run(imbalance="natural", scale=scale)
    counts = class_counts(manifest)
    assert sum(counts.values()) == 4
    assert counts == {c: 1 for c in TARGETS}


@pytest.mark.parametrize("scale", [0.25, 10])
def test_scale_total_exact_when_shares_are_fractional(w, scale):
    manifest, _, _ = w.run(imbalance="natural", scale=scale)
    counts = class_counts(manifest)
    assert sum(counts.values()) == 10
    assert all(counts[c] >= 1 for c in TARGETS)


def test_scale_count_of_the_whole_pool_is_allowed(w):
    manifest, _, _ = w.run(imbalance="natural", scale=40)
    assert class_counts(manifest) == POOL


@pytest.mark.parametrize("scale", [41, 1000])
def test_scale_larger_than_pool_raises(w, scale):
    with pytest.raises(SpecError):
        w.run(imbalance="natural", scale=scale)


def test_scale_below_class_count_raises_rather_than_emptying(w):
    with pytest.raises(SpecError):
        w.run(imbalance="natural", scale=3)


# ---------------------------------------------------------------- caption variants

VARIANTS = ["cname", "a_cname", "full", "full_unprefixed", "title", "tags", "description"]


def _expected_caption(w: World, kind: str, prefix: bool, sample_id: str, label: int) -> str:
    row = w.by_id[sample_id]
    name = NAMES[label]
    if kind == "cname":
        return name
    if kind == "a_cname":
        return f"a {name}"
    if kind == "full_unprefixed":  # ours: the web caption as drawn
        return row["caption"]
    text = row["caption"] if kind == "full" else row[kind]  # full: the paper's Full Text, the whole caption
    if prefix is False or (prefix == "where_missing" and name in text):
        return text
    return f"{name}. {text}" if text else name


@pytest.mark.parametrize("open_world", [False, True])
def test_caption_variants_keep_the_same_rows(w, open_world):
    level = dict(imbalance="balanced", diversity=0.5, open_world=open_world)
    keys = None
    for kind in VARIANTS:
        for prefix in (True, False, "where_missing"):
            manifest, freq, _ = w.run(caption=kind, name_prefix=prefix, **level)
            got = [(r["sample_id"], r["copy"], r["label"]) for r in manifest.to_pylist()]
            if keys is None:
                keys, freq0 = got, freq
            assert got == keys, (kind, prefix)
            assert freq.equals(freq0)
            for r in labelled(manifest):
                assert r["caption"] == _expected_caption(w, kind, prefix, r["sample_id"], r["label"]), (kind, prefix, r)
            for r in manifest.to_pylist():
                if r["label"] is None:  # an open-world sample has no class name to put in its caption
                    assert r["caption"] and r["caption"] not in NAMES.values()
    assert any(r[1] > 0 for r in keys)
    assert any(r[2] is None for r in keys) == open_world


def test_the_class_name_is_prefixed_always_only_where_missing_or_never():
    from tailstudy.variants import with_name

    named, other = "a blurry photo of my Tabby  Cat!", "my cat at home"
    assert with_name(named, "tabby cat", True) == "tabby cat. a blurry photo of my Tabby  Cat!"
    assert with_name(named, "tabby cat", "where_missing") == named  # already named: no copy at the front
    assert with_name(other, "tabby cat", "where_missing") == "tabby cat. my cat at home"
    assert with_name("tabby cats galore", "tabby cat", "where_missing") == "tabby cat. tabby cats galore"  # whole words
    assert with_name(other, "tabby cat", False) == other and with_name("", "tabby cat", "where_missing") == "tabby cat"


def test_empty_field_with_prefix_is_just_the_name(w):
    manifest, _, _ = w.run(caption="description", name_prefix=True)
    empty = [r for r in labelled(manifest) if w.by_id[r["sample_id"]]["description"] == ""]
    assert empty
    assert all(r["caption"] == NAMES[r["label"]] for r in empty)


# ---------------------------------------------------------------- open world

def test_open_world_adds_label_less_rows_only_when_asked(w):
    closed, _, closed_stats = w.run(open_world=False)
    opened, freq, stats = w.run(open_world=True)
    assert closed.column("label").null_count == 0
    nulls = [r for r in opened.to_pylist() if r["label"] is None]
    # at scale 1 every caption matching no target joins, ambiguous ones never do
    assert {r["sample_id"] for r in nulls} == w.open
    assert len(nulls) == len(w.open)
    assert all(r["copy"] == 0 for r in nulls)
    assert stats["open_world_samples"] == len(w.open) and closed_stats["open_world_samples"] == 0
    # the labelled part is unchanged by adding the open-world samples
    assert labelled(opened) == labelled(closed)
    assert class_counts(opened) == POOL
    assert freq.column("count").to_pylist() == [POOL[c] for c in TARGETS]


def test_open_world_at_equal_size_replaces_labelled_rows_with_open_world_concepts():
    """The paper's IN-Caps-100 vs IN-Caps 10%: the same total, every class keeping the same share of its samples, the
    rest captions of open-world concepts (rows naming a non-target concept), never captions that name nothing."""
    w = World(POOL, n_other_only=10)
    closed, _, _ = w.run(open_world=False)
    same, freq, stats = w.run(open_world="equal_size")
    assert same.num_rows == closed.num_rows == sum(POOL.values())
    other_only = {sid for sid in w.open if "other" in w.by_id[sid]["caption"]}
    nulls = {r["sample_id"] for r in same.to_pylist() if r["label"] is None}
    # f = 40 / (40 + 10) = 0.8: 32 labelled samples, 8 of the 10 open-world captions
    assert len(nulls) == stats["open_world_samples"] == 8 and nulls <= other_only
    counts = class_counts(same)
    assert sum(counts.values()) == 32 and all(counts[c] in (math.floor(0.8 * n), math.ceil(0.8 * n))
                                              for c, n in POOL.items())
    assert {r["sample_id"] for r in labelled(same)} <= {r["sample_id"] for r in labelled(closed)}
    check_labels_are_true(w, same)
    assert freq.column("count").to_pylist() == [counts[c] for c in TARGETS]


# ---------------------------------------------------------------- diversity

@pytest.mark.parametrize("d", [0.5, 0.3, 0.25])
def test_diversity_limits_distinct_images_and_keeps_counts(w, d):
    manifest, _, _ = w.run(imbalance="natural", diversity=d)
    assert class_counts(manifest) == POOL
    for cid, available in POOL.items():
        rows = rows_of(manifest, cid)
        distinct = {r["sample_id"] for r in rows}
        assert distinct <= w.members[cid]
        limit = math.ceil(d * available)  # small exact products here: 0.5*6=3, 0.3*20=6, 0.25*4=1, ...
        assert len(distinct) <= limit, (cid, len(distinct), limit)
        assert len(distinct) == min(limit, len(rows))  # without replacement while possible
        assert len({(r["sample_id"], r["copy"]) for r in rows}) == len(rows)


def test_diversity_limit_is_exact_for_float_fractions():
    w = World({10: 25, 20: 5})
    manifest, _, _ = w.run(imbalance="natural", diversity=0.28)
    assert class_counts(manifest) == {10: 25, 20: 5}
    assert len({r["sample_id"] for r in rows_of(manifest, 10)}) == 7  # ceil(0.28 * 25) = ceil(7) = 7
    assert len({r["sample_id"] for r in rows_of(manifest, 20)}) == 2  # ceil(1.4) = 2


# ---------------------------------------------------------------- determinism and the frequency table

LEVELS = [
    dict(imbalance="natural"),
    dict(imbalance="balanced", diversity=0.5, caption="title"),
    dict(imbalance={"zipf": 1.5}, scale=0.5, caption="a_cname"),
    dict(imbalance="natural", open_world=True, diversity=0.5),
]


@pytest.mark.parametrize("level", LEVELS)
def test_deterministic_tables_and_parquet_bytes(w, level, tmp_path):
    m1, f1, s1 = w.run(seed=5, **level)
    m2, f2, s2 = w.run(seed=5, **level)
    assert m1.equals(m2) and f1.equals(f2) and s1 == s2
    write_parquet(m1, tmp_path / "a.parquet")
    write_parquet(m2, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_seed_changes_the_draw_but_not_the_counts(w):
    level = dict(imbalance="balanced")
    a, fa, _ = w.run(seed=0, **level)
    b, fb, _ = w.run(seed=1, **level)
    assert fa.equals(fb)
    assert a.column("sample_id").to_pylist() != b.column("sample_id").to_pylist()


@pytest.mark.parametrize("level", LEVELS)
def test_frequency_table_counts_the_manifest(w, level):
    manifest, freq, _ = w.run(**level)
    rows = freq.to_pylist()
    assert [r["concept_id"] for r in rows] == TARGETS
    assert [r["name"] for r in rows] == [NAMES[c] for c in TARGETS]
    counts = class_counts(manifest)
    assert {r["concept_id"]: r["count"] for r in rows} == {c: counts.get(c, 0) for c in TARGETS}
    total = sum(counts.values())
    assert all(abs(r["share"] - r["count"] / total) < 1e-12 for r in rows)
    ranked = sorted(TARGETS, key=lambda c: (-counts.get(c, 0), c))
    assert {r["concept_id"]: r["rank"] for r in rows} == {c: i + 1 for i, c in enumerate(ranked)}


def test_label_less_rows_are_not_part_of_what_supervised_learners_read():
    import pyarrow as pa

    from tailstudy.stages.curate import subset_digests

    def manifest(ids, labels):
        return pa.table({"sample_id": ids, "copy": pa.array([0] * len(ids), pa.int32()),
                         "label": pa.array(labels, pa.int32()), "caption": [f"c {i}" for i in ids]})

    closed = subset_digests(manifest(["a", "b"], [1, 2]))
    open_world = subset_digests(manifest(["a", "b", "c"], [1, 2, None]))
    relabelled = subset_digests(manifest(["a", "b"], [1, 1]))
    assert closed["labels"] == open_world["labels"] != relabelled["labels"]
    assert closed["labels_captions"] != open_world["labels_captions"]  # CLIP reads the open-world captions
