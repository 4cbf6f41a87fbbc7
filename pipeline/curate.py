"""Curated subsets: one per factor level, differing from the base in exactly that factor.

The algorithm, in order:
1. label every caption that matches exactly one target concept (several -> ambiguous; none -> label-less);
2. keep the concepts of the level (all, k random, a named list, or given names);
3. per-class counts from the imbalance profile: natural, balanced, zipf, exponential, the shape of a reference
   corpus, or MetaCLIP-style capping (each sample kept with probability t / max(count, t));
4. scale the counts (a fraction or a total) without emptying any class, then trim the k rarest classes to a ceiling;
5. draw each class's samples from a ``diversity`` fraction of its distinct images (repeats where the count exceeds
   what is there, recorded in ``copy``);
6. write the caption variant; add label-less (open-world) samples when asked: on top (`open_world: true`), or in
   place of labelled ones at the same total (`open_world: equal_size`, captions of open-world concepts only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tailstudy.classlists import named_class_list
from tailstudy.errors import SpecError
from tailstudy.frequency import concept_freq, imbalance_stats, reference_counts
from tailstudy.stats import spearman
from tailstudy.spec import CapProfile, DiversityThreshold, ExponentialProfile, MatchProfile, SubsetSpec, TrimTail, ZipfProfile
from tailstudy.variants import TEMPLATE_VARIANTS, caption_variant, prompt_templates

CURATE_VERSION = 4  # 4: text variants name their class by `name_prefix` (default where_missing; `full` too); 3:
# caption `full` is prefixed by the class name (the paper's Full Text)

# Seed streams of the curate stage: np.random.default_rng([seed, STREAM, ...]) keeps every draw independent.
_CLASS_DRAW, _OPEN_DRAW, _CAP_DRAW, _TEMPLATE_DRAW, _CONCEPT_DRAW = range(5)


@dataclass(frozen=True)
class Pool:
    """Labelled candidates per target class, and label-less (open-world) candidates."""

    by_class: dict[int, np.ndarray]  # concept_id -> sorted row indices into captions
    open_rows: np.ndarray  # rows matching no target concept
    multi_rows: dict[int, list[int]]  # row -> the target concepts it matches, for rows matching several
    open_concept_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # open rows that name
    # some other (open-world) concept


def build_pool(sample_ids: np.ndarray, match_ids: np.ndarray, match_concepts: np.ndarray, targets: list[int]) -> Pool:
    row_of = {sid: i for i, sid in enumerate(sample_ids)}
    target_set = set(targets)
    hits: dict[int, set[int]] = {}
    for sid, cid in zip(match_ids, match_concepts):
        if int(cid) in target_set:
            hits.setdefault(row_of[sid], set()).add(int(cid))
    by_class: dict[int, list[int]] = {c: [] for c in targets}
    multi: dict[int, list[int]] = {}
    for row, cids in hits.items():
        if len(cids) == 1:
            by_class[next(iter(cids))].append(row)
        else:
            multi[row] = sorted(cids)
    open_rows = np.setdiff1d(np.arange(len(sample_ids)), np.fromiter(hits, np.int64, len(hits)))
    named = np.unique(np.fromiter((row_of[sid] for sid in match_ids), np.int64, len(match_ids)))
    return Pool({c: np.sort(np.asarray(r, np.int64)) for c, r in by_class.items()}, open_rows, multi,
                np.intersect1d(open_rows, named))


# ---------------------------------------------------------------- concepts

def select_concepts(targets: list[int], choice, names: dict[int, str], seed: int) -> list[int]:
    """The level's classes among the corpus's target concepts."""
    targets = sorted(targets)
    if choice == "all":
        return targets
    if isinstance(choice, int):
        if choice > len(targets):
            raise SpecError(f"concepts: {choice} classes asked, the corpus has {len(targets)} target concepts")
        rng = np.random.default_rng([seed, _CONCEPT_DRAW])
        return sorted(int(c) for c in rng.choice(targets, size=choice, replace=False))
    if isinstance(choice, str):  # a named list
        listed = set(named_class_list(choice))
        chosen = [c for c in targets if c in listed]
        if len(chosen) < 2:
            raise SpecError(f"concepts: {choice} shares {len(chosen)} classes with the corpus's targets (need 2)")
        return chosen
    by_name = {names.get(c, "").lower(): c for c in targets}
    unknown = [n for n in choice if n.lower() not in by_name]
    if unknown:
        raise SpecError(f"concepts: unknown class {unknown[0]!r} (not a target concept of this corpus)")
    return sorted(by_name[n.lower()] for n in choice)


# ---------------------------------------------------------------- counts

def _ranked(available: dict[int, int]) -> list[int]:
    """Non-empty classes by natural frequency (ties by concept id): head first."""
    return sorted((c for c in available if available[c] > 0), key=lambda c: (-available[c], c))


def _spread(ranked: list[int], weights: np.ndarray, total: int) -> dict[int, int]:
    counts = np.maximum(np.floor(weights / weights.sum() * total), 1).astype(int)
    return {c: int(n) for c, n in zip(ranked, counts)}


def _zipf(ranked: list[int], level: ZipfProfile, names: dict[int, str]) -> dict[int, float]:
    """Zipf: the r-th most available class gets weight 1 / r^a."""
    return dict(zip(ranked, 1.0 / np.arange(1, len(ranked) + 1) ** level.zipf))


def _exponential(ranked: list[int], level: ExponentialProfile, names: dict[int, str]) -> dict[int, float]:
    """Exponential: weights fall geometrically from 1 to 1 / r across the ranked classes."""
    return dict(zip(ranked, level.exponential ** (-np.arange(len(ranked)) / max(1, len(ranked) - 1))))


def _match(ranked: list[int], level: MatchProfile, names: dict[int, str]) -> dict[int, float]:
    """Match: each class weighted by its count in a shipped reference corpus (at least 1)."""
    table = reference_counts(level.match)
    return {c: float(max(table.get(names.get(c, ""), 0), 1)) for c in ranked}


def _balanced(ranked: list[int], level: str, names: dict[int, str]) -> dict[int, float]:
    """Balanced: every class the same weight."""
    return {c: 1.0 for c in ranked}


# imbalance kind -> its shape rule; natural and cap keep the data's own shape (cap thins it later: cap_rows)
IMBALANCE_SHAPES = {"natural": None, "balanced": _balanced, ZipfProfile: _zipf, ExponentialProfile: _exponential,
                    MatchProfile: _match, CapProfile: None}


def target_shape(available: dict[int, int], imbalance, names: dict[int, str]) -> dict[int, float] | None:
    """The per-class shape an imbalance level asks for (None for natural and cap, which keep the data's own)."""
    rule = IMBALANCE_SHAPES[imbalance if isinstance(imbalance, str) else type(imbalance)]
    return None if rule is None else rule(_ranked(available), imbalance, names)


def shape_counts(available: dict[int, int], imbalance, names: dict[int, str] | None = None) -> dict[int, int]:
    """Per-class target counts at the pool's total; classes with no candidates stay at zero."""
    shape = target_shape(available, imbalance, names or {})
    out = {c: 0 for c in available}
    if shape is None or not shape:
        return {**out, **available}
    total = sum(available.values())
    if imbalance == "balanced":
        return {**out, **{c: total // len(shape) for c in shape}}
    ranked = list(shape)
    return {**out, **_spread(ranked, np.array([shape[c] for c in ranked]), total)}


def cap_rows(pool: Pool, classes: list[int], cap: CapProfile, seed: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """MetaCLIP-style balancing: each (caption, concept) match is kept with probability t / max(count, t), count being
    the concept's number of matching captions; a caption is kept if any of its draws keeps it. -> (kept single-concept
    rows per class, kept rows matching several concepts, which have no single label)."""
    counts = {c: len(pool.by_class[c]) for c in classes}
    for cids in pool.multi_rows.values():
        for c in cids:
            if c in counts:
                counts[c] += 1
    keep_p = {c: cap.cap / max(n, cap.cap) for c, n in counts.items()}
    rng = np.random.default_rng([seed, _CAP_DRAW])
    kept = {}
    for c in classes:  # sorted: the draw order is fixed
        rows = pool.by_class[c]
        kept[c] = rows[rng.random(len(rows)) < keep_p[c]]
    multi_kept = []
    for row in sorted(pool.multi_rows):
        cids = [c for c in pool.multi_rows[row] if c in keep_p]
        if cids and (rng.random(len(cids)) < np.array([keep_p[c] for c in cids])).any():
            multi_kept.append(row)
    return kept, np.asarray(multi_kept, np.int64)


def scale_counts(counts: dict[int, int], scale: float) -> dict[int, int]:
    """Scale to a fraction (<= 1) or a total (> 1), exactly; no non-empty class drops to zero.

    Largest-remainder rounding of the proportional shares, each non-empty class kept at >= 1; what that floor adds
    is taken back from the largest classes (as the paper re-adds one example per emptied class)."""
    total = sum(counts.values())
    target = int(round(total * scale)) if scale <= 1 else int(scale)
    if target > total:
        raise SpecError(f"scale: {target} samples asked, the pool at this level has {total}")
    nonempty = sorted(c for c in counts if counts[c] > 0)
    if target < len(nonempty):
        raise SpecError(f"scale: {target} samples cannot keep all {len(nonempty)} classes")
    exact = {c: counts[c] * target / total for c in nonempty}
    scaled = {c: max(1, math.floor(exact[c])) for c in nonempty}
    short = target - sum(scaled.values())
    for c in sorted(nonempty, key=lambda c: (-(exact[c] - math.floor(exact[c])), c))[:max(0, short)]:
        scaled[c] += 1
    excess = sum(scaled.values()) - target
    for c in sorted(nonempty, key=lambda c: (-scaled[c], c)):
        if excess <= 0:
            break
        take = min(excess, scaled[c] - 1)
        scaled[c] -= take
        excess -= take
    return {c: scaled.get(c, 0) for c in counts}


def trim_tail(counts: dict[int, int], available: dict[int, int], trim: TrimTail | None) -> tuple[dict[int, int], list[int]]:
    """Cut the k classes rarest in the pool (ties by concept id) down to `ceil` samples. -> (counts, trimmed ids)."""
    if trim is None:
        return counts, []
    if trim.last_k >= len(counts):
        raise SpecError(f"trim_tail: last_k={trim.last_k} would trim all {len(counts)} classes")
    rarest = sorted(counts, key=lambda c: (available[c], c))[: trim.last_k]
    return {c: (min(n, trim.ceil) if c in rarest else n) for c, n in counts.items()}, sorted(rarest)


def equal_size(counts: dict[int, int], open_available: int) -> tuple[dict[int, int], int]:
    """The paper's open-world comparison at an equal sample count (IN-Caps-100 vs a 10% sample of IN-Caps): the
    subset becomes a random draw of its size from the labelled samples and the open-world concepts' captions together,
    so every class keeps the share f = total / (total + open) of its samples (largest remainder, none emptied) and
    open-world captions fill the rest. -> (labelled counts, open-world samples)."""
    total = sum(counts.values())
    if total == 0 or open_available == 0:
        return counts, 0
    scaled = scale_counts(counts, total / (total + open_available))
    return scaled, total - sum(scaled.values())


def similar_enough(matches: pa.Table, diversity) -> pa.Table:
    """LAIONet-style intra-class diversity: keep only matches whose caption-definition similarity reaches the
    threshold (a higher threshold keeps captions closer to the definition: less diverse classes)."""
    if not isinstance(diversity, DiversityThreshold):
        return matches
    methods = set(matches.column("method").to_pylist()) if "method" in matches.column_names else set()
    if methods != {"semantic"}:
        raise SpecError("diversity: {threshold: t} needs matches of the semantic matcher (matching.method: semantic)")
    return matches.filter(pc.greater_equal(matches.column("score"), diversity.threshold))


def draw(rows: np.ndarray, n: int, diversity: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n rows from a class: without replacement while possible, then repeats; -> (rows, copy index)."""
    if n == 0 or len(rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = rows[rng.permutation(len(rows))]
    fraction = diversity if isinstance(diversity, float) else 1.0  # a threshold already filtered the pool
    distinct = order[: max(1, math.ceil(len(order) * fraction - 1e-9))]  # 25 * 0.28 is 7, not 7.000000000000001
    reps = np.arange(n)
    return distinct[reps % len(distinct)], reps // len(distinct)


# ---------------------------------------------------------------- captions

def caption_texts(level: SubsetSpec, rows: np.ndarray, labels: np.ndarray, captions: pa.Table,
                  names: dict[int, str], synonyms: dict[int, tuple[str, ...]], seed: int) -> list[str]:
    cols = {name: captions.column(name).to_pylist() for name in ("caption", "title", "tags", "description")}
    rng = np.random.default_rng([seed, _TEMPLATE_DRAW])
    templates = prompt_templates("templates") if level.caption in TEMPLATE_VARIANTS else None
    picks = rng.integers(len(templates), size=len(rows)) if templates else None
    syn_picks = rng.random(len(rows))
    texts = []
    for i, (r, lab) in enumerate(zip(rows, labels)):
        full = cols["caption"][r] or ""
        if lab < 0:  # label-less samples keep their own caption
            texts.append(full)
            continue
        syns = synonyms.get(int(lab)) or (names.get(int(lab), ""),)
        fields = {f: cols[f][r] or "" for f in ("title", "tags", "description")}
        texts.append(caption_variant(level.caption, names.get(int(lab), ""), fields, full, level.name_prefix,
                                     templates[picks[i]] if templates else None,
                                     syns[int(syn_picks[i] * len(syns))]))
    return texts


# ---------------------------------------------------------------- the subset

def curate(captions: pa.Table, matches: pa.Table, targets: list[int], names: dict[int, str], level: SubsetSpec,
           seed: int, synonyms: dict[int, tuple[str, ...]] | None = None) -> tuple[pa.Table, pa.Table, dict]:
    """-> (subset manifest, per-class frequency of the subset, achieved imbalance statistics)."""
    sample_ids = captions.column("sample_id").to_numpy(zero_copy_only=False)
    matches = similar_enough(matches, level.diversity)
    pool = build_pool(sample_ids, matches.column("sample_id").to_numpy(zero_copy_only=False),
                      matches.column("concept_id").to_numpy(), targets)
    classes = select_concepts(targets, level.concepts, names, seed)
    available = {c: len(pool.by_class[c]) for c in classes}
    by_class = {c: pool.by_class[c] for c in classes}
    extra_label_less = np.zeros(0, np.int64)
    if isinstance(level.imbalance, CapProfile):
        by_class, extra_label_less = cap_rows(pool, classes, level.imbalance, seed)
        counts = {c: len(rows) for c, rows in by_class.items()}
    else:
        counts = shape_counts(available, level.imbalance, names)
    counts = scale_counts(counts, level.scale)
    counts, trimmed = trim_tail(counts, available, level.trim_tail)
    n_open = 0
    if level.open_world == "equal_size":
        counts, n_open = equal_size(counts, len(pool.open_concept_rows))

    picked_rows, copies, labels = [], [], []
    for cid in classes:
        rows, copy = draw(by_class[cid], counts[cid], level.diversity, np.random.default_rng([seed, _CLASS_DRAW, cid]))
        picked_rows.append(rows)
        copies.append(copy)
        labels.append(np.full(len(rows), cid, np.int64))
    if level.open_world:
        rng = np.random.default_rng([seed, _OPEN_DRAW])
        if level.open_world == "equal_size":
            label_less, take = pool.open_concept_rows, n_open
        else:
            label_less = np.union1d(pool.open_rows, extra_label_less)
            fraction = level.scale if level.scale <= 1 else min(1.0, level.scale / max(1, sum(available.values())))
            take = int(round(len(label_less) * fraction))
        rows = np.sort(label_less[rng.permutation(len(label_less))[:take]])
        picked_rows.append(rows)
        copies.append(np.zeros(len(rows), np.int64))
        labels.append(np.full(len(rows), -1, np.int64))
    rows = np.concatenate(picked_rows) if picked_rows else np.zeros(0, np.int64)
    copy = np.concatenate(copies) if copies else np.zeros(0, np.int64)
    label = np.concatenate(labels) if labels else np.zeros(0, np.int64)

    texts = caption_texts(level, rows, label, captions, names, synonyms or {}, seed)
    manifest = pa.table({
        "sample_id": pa.array(sample_ids[rows] if len(rows) else [], pa.string()),
        "copy": pa.array(copy, pa.int32()),
        "label": pa.array([int(x) if x >= 0 else None for x in label], pa.int32()),
        "caption": pa.array(texts, pa.string()),
    }).sort_by([("sample_id", "ascending"), ("copy", "ascending")])
    freq = concept_freq(np.array(classes), [names.get(c, "") for c in classes],
                        pc.drop_null(manifest.column("label")).to_numpy())
    return manifest, freq, achieved_stats(freq, manifest, level, available, names, trimmed)


def achieved_stats(freq: pa.Table, manifest: pa.Table, level: SubsetSpec, available: dict[int, int],
                   names: dict[int, str], trimmed: list[int]) -> dict:
    """What the subset turned out to be: imbalance statistics and, where the level has a target shape, the rank
    correlation of the achieved counts with it."""
    counts = dict(zip(freq.column("concept_id").to_pylist(), freq.column("count").to_pylist()))
    stats = imbalance_stats(np.array(list(counts.values())))
    shape = target_shape(available, level.imbalance, names)
    if isinstance(level.imbalance, CapProfile):
        shape = {c: min(n, level.imbalance.cap) for c, n in available.items()}
    if shape and len(set(shape.values())) > 1:  # a flat target (balanced) has no ranking to correlate with
        ids = sorted(shape)
        stats["rho_target"] = spearman(np.array([shape[c] for c in ids]), np.array([counts.get(c, 0) for c in ids]))
    stats["classes"] = len(counts)
    stats["trimmed_classes"] = trimmed
    stats["open_world_samples"] = int(pc.sum(pc.is_null(manifest.column("label"))).as_py() or 0)
    stats["repeated_samples"] = int(pc.sum(pc.greater(manifest.column("copy"), 0)).as_py() or 0)
    return stats
