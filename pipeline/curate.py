"""Curated subsets: one per factor level, differing from the base in exactly that factor.

The algorithm, in order:
1. label every caption that matches exactly one target concept (several -> ambiguous, dropped; none -> open-world);
2. shape per-class counts by the imbalance profile (natural / balanced / zipf);
3. scale the counts (a fraction or a total) without emptying any class;
4. draw each class's samples from its first ``diversity`` fraction of distinct images (repeats where the count
   exceeds what is there, recorded in ``copy``);
5. write the caption variant; add label-less open-world samples when asked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import SpecError
from pipeline.frequency import concept_freq, imbalance_stats
from pipeline.spec import SubsetSpec, ZipfProfile

CURATE_VERSION = 1


@dataclass(frozen=True)
class Pool:
    """Labelled candidates per target class, and label-less (open-world) candidates."""

    by_class: dict[int, np.ndarray]  # concept_id -> sorted row indices into captions
    open_rows: np.ndarray


def build_pool(sample_ids: np.ndarray, match_ids: np.ndarray, match_concepts: np.ndarray, targets: list[int]) -> Pool:
    row_of = {sid: i for i, sid in enumerate(sample_ids)}
    target_set = set(targets)
    hits: dict[int, list[int]] = {}
    for sid, cid in zip(match_ids, match_concepts):
        if int(cid) in target_set:
            hits.setdefault(row_of[sid], []).append(int(cid))
    by_class: dict[int, list[int]] = {c: [] for c in targets}
    for row, cids in hits.items():
        if len(set(cids)) == 1:
            by_class[cids[0]].append(row)
    open_rows = np.setdiff1d(np.arange(len(sample_ids)), np.fromiter(hits, np.int64, len(hits)))
    return Pool({c: np.sort(np.asarray(r, np.int64)) for c, r in by_class.items()}, open_rows)


def shape_counts(available: dict[int, int], imbalance) -> dict[int, int]:
    """Per-class target counts; classes with no candidates stay at zero (they cannot be drawn from)."""
    classes = sorted(c for c in available if available[c] > 0)
    total = sum(available.values())
    if imbalance == "natural" or not classes:
        return dict(available)
    if imbalance == "balanced":
        return {c: (total // len(classes) if c in classes else 0) for c in available}
    if isinstance(imbalance, ZipfProfile):
        ranked = sorted(classes, key=lambda c: (-available[c], c))  # keep the natural order of head and tail
        weights = 1.0 / np.arange(1, len(ranked) + 1) ** imbalance.zipf
        counts = np.maximum(np.floor(weights / weights.sum() * total), 1).astype(int)
        return {**{c: 0 for c in available}, **{c: int(n) for c, n in zip(ranked, counts)}}
    raise SpecError(f"imbalance: unsupported level {imbalance!r}")


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


def draw(rows: np.ndarray, n: int, diversity: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n rows from a class: without replacement while possible, then repeats; -> (rows, copy index)."""
    if n == 0 or len(rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = rows[rng.permutation(len(rows))]
    distinct = order[: max(1, math.ceil(len(order) * diversity - 1e-9))]  # 25 * 0.28 is 7, not 7.000000000000001
    reps = np.arange(n)
    picked = distinct[reps % len(distinct)]
    return picked, reps // len(distinct)


def caption_variant(kind: str, name: str, title: str, tags: str, description: str, full: str, prefix: bool) -> str:
    if kind == "cname":
        return name
    if kind == "a_cname":
        return f"a {name}"
    if kind == "full":
        return full
    text = {"title": title, "tags": tags, "description": description}[kind] or ""
    if not prefix:
        return text
    return f"{name}. {text}" if text else name


def curate(captions: pa.Table, matches: pa.Table, targets: list[int], names: dict[int, str], level: SubsetSpec,
           seed: int) -> tuple[pa.Table, pa.Table, dict]:
    """-> (subset manifest, per-class frequency of the subset, achieved imbalance statistics)."""
    sample_ids = captions.column("sample_id").to_numpy(zero_copy_only=False)
    pool = build_pool(sample_ids, matches.column("sample_id").to_numpy(zero_copy_only=False),
                      matches.column("concept_id").to_numpy(), targets)
    available = {c: len(rows) for c, rows in pool.by_class.items()}
    counts = scale_counts(shape_counts(available, level.imbalance), level.scale)

    picked_rows, copies, labels = [], [], []
    for cid in sorted(counts):
        rows, copy = draw(pool.by_class[cid], counts[cid], level.diversity,
                           np.random.default_rng([seed, 0, cid]))
        picked_rows.append(rows)
        copies.append(copy)
        labels.append(np.full(len(rows), cid, np.int64))
    if level.open_world and len(pool.open_rows):
        rng = np.random.default_rng([seed, 1, 0])  # class draws use [seed, 0, concept_id]
        fraction = level.scale if level.scale <= 1 else min(1.0, level.scale / max(1, sum(available.values())))
        n_open = int(round(len(pool.open_rows) * fraction))
        rows = np.sort(pool.open_rows[rng.permutation(len(pool.open_rows))[:n_open]])
        picked_rows.append(rows)
        copies.append(np.zeros(len(rows), np.int64))
        labels.append(np.full(len(rows), -1, np.int64))
    rows = np.concatenate(picked_rows) if picked_rows else np.zeros(0, np.int64)
    copy = np.concatenate(copies) if copies else np.zeros(0, np.int64)
    label = np.concatenate(labels) if labels else np.zeros(0, np.int64)

    col = {name: captions.column(name).to_pylist() for name in ("caption", "title", "tags", "description")}
    texts = [
        caption_variant(level.caption, names.get(int(lab), ""), col["title"][r], col["tags"][r],
                        col["description"][r], col["caption"][r] or "", level.name_prefix)
        if lab >= 0 else (col["caption"][r] or "")
        for r, lab in zip(rows, label)
    ]
    manifest = pa.table({
        "sample_id": pa.array(sample_ids[rows] if len(rows) else [], pa.string()),
        "copy": pa.array(copy, pa.int32()),
        "label": pa.array([int(x) if x >= 0 else None for x in label], pa.int32()),
        "caption": pa.array(texts, pa.string()),
    })
    manifest = manifest.sort_by([("sample_id", "ascending"), ("copy", "ascending")])
    freq = concept_freq(np.array(sorted(targets)), [names.get(c, "") for c in sorted(targets)],
                        pc.drop_null(manifest.column("label")).to_numpy())
    stats = imbalance_stats(freq.column("count").to_numpy())
    stats["open_world_samples"] = int(pc.sum(pc.is_null(manifest.column("label"))).as_py() or 0)
    stats["repeated_samples"] = int(pc.sum(pc.greater(manifest.column("copy"), 0)).as_py() or 0)
    return manifest, freq, stats
