"""Concept frequencies, imbalance statistics and the rank-frequency figure."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tailstudy.arrays import arrow_ints, arrow_strings, numpy_ints
from tailstudy.errors import SpecError
from tailstudy.paths import REFERENCE_FREQ_DIR

FREQUENCY_VERSION = 2


def reference_tables() -> list[str]:
    return sorted(p.name[len("class_frequency_"):-len(".txt")] for p in REFERENCE_FREQ_DIR.glob("class_frequency_*.txt"))


@lru_cache(maxsize=None)
def reference_counts(name: str) -> dict[str, int]:
    """name -> count from a shipped table (Wen et al. 2024, MIT). ``laion400m`` means ``laion400m_imagenet_ori``."""
    candidates = [name, f"{name}_imagenet_ori"]
    for candidate in candidates:
        path = REFERENCE_FREQ_DIR / f"class_frequency_{candidate}.txt"
        if path.is_file():
            counts: dict[str, int] = {}
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    cname, _, count = line.rpartition("\t")
                    counts[cname] = int(float(count))
            return counts
    raise SpecError(f"profile {name!r}: no reference frequency table of that name (e.g. laion400m, metaclip_400m, cc12m)")


def concept_freq(concept_ids: np.ndarray, names: list[str], matched_ids: np.ndarray) -> pa.Table:
    """count, rank (1 = most frequent; ties broken by concept_id) and share of each concept."""
    concept_ids = np.asarray(concept_ids)
    index = {int(c): i for i, c in enumerate(concept_ids)}
    counts = np.zeros(len(concept_ids), np.int64)
    for cid, n in zip(*np.unique(np.asarray(matched_ids), return_counts=True)):
        if int(cid) in index:
            counts[index[int(cid)]] = n
    order = np.lexsort((concept_ids, -counts))
    ranks = np.empty(len(counts), np.int64)
    ranks[order] = np.arange(1, len(counts) + 1)
    total = counts.sum()
    share = counts / total if total else np.zeros(len(counts))
    return pa.table({
        "concept_id": arrow_ints(concept_ids, np.int32),
        "name": arrow_strings(names),
        "count": arrow_ints(counts, np.int64),
        "rank": arrow_ints(ranks, np.int32),
        "share": arrow_ints(share, np.float64),
    })


def one_row_table(values: dict) -> pa.Table:
    """{column: str | int | float} -> a one-row table typed as pa.table({k: [v]}) would type it (string, int64,
    double), without pyarrow's pandas import (tailstudy.arrays)."""
    columns = {}
    for name, value in values.items():
        if isinstance(value, str):
            columns[name] = arrow_strings([value])
        elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            columns[name] = pa.array([value])  # not used by the frequency stage; the general (pandas-importing) path
        else:
            columns[name] = arrow_ints([value], np.int64 if isinstance(value, (int, np.integer)) else np.float64)
    return pa.table(columns)


def gini(counts: np.ndarray) -> float:
    x = np.sort(np.asarray(counts, float))
    if len(x) == 0 or x.sum() == 0:
        return 0.0
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def zipf_fit(counts: np.ndarray) -> tuple[float, float]:
    """Least-squares line of log(count) against log(rank) over non-zero counts -> (s, log c): count ~ c * rank^-s."""
    x = np.sort(np.asarray(counts, float)[np.asarray(counts) > 0])[::-1]
    if len(x) < 2:
        return float("nan"), float("nan")
    slope, intercept = np.polyfit(np.log(np.arange(1, len(x) + 1)), np.log(x), 1)
    return float(-slope), float(intercept)


def zipf_exponent(counts: np.ndarray) -> float:
    """Slope of log(count) against log(rank) over non-zero counts, negated (Zipf's s)."""
    return zipf_fit(counts)[0]


def imbalance_stats(counts: np.ndarray) -> dict[str, float]:
    counts = np.asarray(counts, np.int64)
    nonzero = counts[counts > 0]
    top = max(1, int(round(len(counts) * 0.1)))
    total = counts.sum()
    return {
        "concepts": int(len(counts)),
        "total": int(total),
        "max": int(counts.max()) if len(counts) else 0,
        "min_nonzero": int(nonzero.min()) if len(nonzero) else 0,
        "max_min_ratio": float(nonzero.max() / nonzero.min()) if len(nonzero) else float("nan"),
        "zero_concepts": int((counts == 0).sum()),
        "gini": gini(counts),
        "top10_share": float(np.sort(counts)[::-1][:top].sum() / total) if total else 0.0,
        "zipf_exponent": zipf_exponent(counts),
    }


def caption_coverage(n_captions: int, match_sample_ids: pa.Array) -> dict[str, int]:
    """How many captions matched no concept, exactly one, or several."""
    if len(match_sample_ids) == 0:
        return {"captions": n_captions, "no_concept": n_captions, "one_concept": 0, "several_concepts": 0}
    per_caption = numpy_ints(pc.value_counts(match_sample_ids).field("counts"))
    return {
        "captions": n_captions,
        "no_concept": int(n_captions - len(per_caption)),
        "one_concept": int((per_caption == 1).sum()),
        "several_concepts": int((per_caption > 1).sum()),
    }


def rank_frequency_figure(counts: np.ndarray, path: Path, title: str) -> Path:
    """Log-log plot of concept count against rank (non-zero counts), with the fitted Zipf line; a PNG without
    timestamps or version metadata, so the same counts give the same bytes."""
    from matplotlib.figure import Figure  # 0.3-0.5 s: only a figure pays it (`tailstudy count` imports this module)

    y = np.sort(np.asarray(counts, float)[np.asarray(counts) > 0])[::-1]
    fig = Figure(figsize=(6, 4), dpi=100)  # no pyplot: no GUI backend, no global figure list
    ax = fig.subplots()
    if len(y):
        ranks = np.arange(1, len(y) + 1)
        ax.loglog(ranks, y, marker=".", linestyle="none", markersize=3, label=f"{len(y)} concepts with a match")
        s, log_c = zipf_fit(y)
        if np.isfinite(s):
            ax.loglog(ranks, np.exp(log_c) * ranks ** -s, linewidth=1, label=f"Zipf fit, s = {s:.2f}")
        ax.legend(loc="lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no matches", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("rank")
    ax.set_ylabel("captions")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", metadata={"Software": None})
    os.replace(tmp, path)
    return path
