"""The paper's claims as measured rows: each claim -> the pair of (factor level, learner) runs it compares, the paired
per-seed difference of a metric, its 95% t-interval over seeds and a verdict.

Directional claims ("A is more biased than B"): reproduced when the interval lies above 0, contradicted when it lies
below 0, inconclusive when it contains 0 or fewer than 2 seeds pair up. The similarity claim (template-only CLIP is
SL-like) is an equivalence test: reproduced when the interval lies inside ±EQUIVALENCE, contradicted when it lies
wholly outside, inconclusive otherwise. A claim whose runs are absent from the study is 'not tested'.
Nothing here knows the expected answer beyond the claim's direction.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

EQUIVALENCE = 0.1  # rho differences under ~0.1 are seed noise in this project's runs
COLUMNS = ["claim", "compares", "metric", "effect", "ci_low", "ci_high", "seeds", "verdict"]
BASE_CELLS = ("base=base", "imbalance=natural", "caption=full", "scale=1.0", "open_world=false")


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a cell ('factor=level', or BASE for the study's base level) and a learner."""

    cell: str
    model: str


BASE = "<base>"


@dataclass(frozen=True)
class Claim:
    text: str
    metric: str
    # candidate (more biased side, less biased side) pairs; the first whose runs exist is measured
    pairs: tuple[tuple[Side, Side], ...]
    similar: bool = False  # an equivalence claim


CLAIMS = (
    Claim("SL is more biased than CLIP", "rho_pred", ((Side(BASE, "sl"), Side(BASE, "clip")),)),
    Claim("a sampled vocabulary debiases SL", "rho_pred", ((Side(BASE, "sl"), Side(BASE, "sl_sampled_vocab")),)),
    Claim("descriptive captions help CLIP", "rho_pred",
          ((Side("caption=a_cname", "clip"), Side("caption=full", "clip")),
           (Side("caption=templates", "clip"), Side("caption=full", "clip")),
           (Side("caption=cname", "clip"), Side("caption=full", "clip")))),
    Claim("template-only CLIP is SL-like", "rho_pred",
          ((Side("caption=templates", "clip"), Side("caption=templates", "sl")),
           (Side("caption=a_cname", "clip"), Side("caption=a_cname", "sl"))), similar=True),
    Claim("more data scale helps CLIP", "rho_pred", ()),  # pairs from the study's scale levels (smallest, largest)
    Claim("open-world concepts help CLIP", "rho_pred",
          ((Side("open_world=false", "clip"), Side("open_world=true", "clip")),)),
    Claim("a frozen pretrained text head helps SL", "rho_pred",
          ((Side(BASE, "sl_sampled_vocab"), Side(BASE, "sl_sampled_vocab_frozen_text")),
           (Side(BASE, "sl"), Side(BASE, "sl_frozen_text_head")))),
    Claim("imbalance raises bias (CLIP)", "rho_pred_corpus",
          ((Side("imbalance=natural", "clip"), Side("imbalance=balanced", "clip")),)),
)


def base_cell(run_metrics: pd.DataFrame) -> str | None:
    """The study's base level: the first of BASE_CELLS present, else the first cell."""
    cells = list(dict.fromkeys(run_metrics["cell"]))
    return next((c for c in BASE_CELLS if c in cells), cells[0] if cells else None)


def scale_pairs(run_metrics: pd.DataFrame) -> tuple[tuple[Side, Side], ...]:
    levels = run_metrics.loc[run_metrics["factor"] == "scale", "level"].unique()
    if len(levels) < 2:
        return ()
    ordered = sorted(levels, key=float)
    return ((Side(f"scale={ordered[0]}", "clip"), Side(f"scale={ordered[-1]}", "clip")),)


def per_seed(run_metrics: pd.DataFrame, side: Side, metric: str) -> pd.Series:
    rows = run_metrics[(run_metrics["cell"] == side.cell) & (run_metrics["model"] == side.model)]
    return rows.groupby("seed")[metric].mean()


def interval(diffs: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval of paired differences (NaN bounds with fewer than 2)."""
    mean = float(np.mean(diffs)) if len(diffs) else float("nan")
    if len(diffs) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(diffs) - 1) * np.std(diffs, ddof=1) / np.sqrt(len(diffs))
    return mean, mean - half, mean + half


def verdict(low: float, high: float, n: int, similar: bool) -> str:
    if n < 2 or np.isnan(low):
        return "inconclusive"
    if similar:
        if -EQUIVALENCE < low and high < EQUIVALENCE:
            return "reproduced"
        return "contradicted" if (low >= EQUIVALENCE or high <= -EQUIVALENCE) else "inconclusive"
    return "reproduced" if low > 0 else "contradicted" if high < 0 else "inconclusive"


def measure(claim: Claim, run_metrics: pd.DataFrame, base: str | None) -> dict:
    pairs = claim.pairs or scale_pairs(run_metrics)
    for a, b in pairs:
        a, b = (Side(base if s.cell == BASE else s.cell, s.model) for s in (a, b))
        x, y = per_seed(run_metrics, a, claim.metric), per_seed(run_metrics, b, claim.metric)
        if x.empty or y.empty:
            continue
        diffs = (x - y).dropna().to_numpy()
        effect, low, high = interval(diffs)
        return {"claim": claim.text, "compares": f"{a.cell}/{a.model} − {b.cell}/{b.model}", "metric": claim.metric,
                "effect": effect, "ci_low": low, "ci_high": high, "seeds": len(diffs),
                "verdict": verdict(low, high, len(diffs), claim.similar)}
    return {"claim": claim.text, "compares": "", "metric": claim.metric, "effect": np.nan, "ci_low": np.nan,
            "ci_high": np.nan, "seeds": 0, "verdict": "not tested"}


def claims_table(run_metrics: pd.DataFrame, per_class: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per claim of Wen et al. (2024), measured on a study's runs (`run_metrics` with factor, level, model,
    seed and the metrics; `per_class` is accepted for claims that need per-class data, none today)."""
    rm = run_metrics.copy()
    if "cell" not in rm:
        rm["cell"] = rm["factor"] + "=" + rm["level"].astype(str)
    if rm.empty:
        return pd.DataFrame([measure(c, rm, None) for c in CLAIMS], columns=COLUMNS)
    base = base_cell(rm)
    return pd.DataFrame([measure(c, rm, base) for c in CLAIMS], columns=COLUMNS)
