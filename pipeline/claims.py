"""The claims of Wen et al. (NeurIPS 2024) as measured rows, coded as the paper states them.

Each claim names the runs it compares, one or more metrics, and the effect the paper reports on each (read from its
figures; CVMI-Lab/clip-beyond-tail's fig_utils notebooks draw them). Per seed, the claim's effect on a metric is
computed from that seed's runs, signed so that a positive value is what the paper states; over seeds it gets a 95%
t-interval. The rule, per claim:

- a run within `CHANCE_FACTOR` x chance top-1 cannot decide anything: the claim reads "near chance";
- reproduced when every metric's interval lies above 0; contradicted when any lies below 0; else inconclusive;
- an inconclusive metric whose interval is wider than the paper's effect is underpowered for that effect: the row
  says so, with the number of seeds that would resolve it at the measured spread; one whose interval holds 0 but lies
  wholly below the paper's effect is "smaller than the paper's" (ours): no effect of the paper's size, decided.

Comparisons (Side = a study cell and a learner name; `<base>` = the study's base cell):
1. SL more biased than CLIP: sl − clip at the base cell, on rho_pred and rho_acc.
2. A sampled vocabulary debiases SL: sl − sl_sampled_vocab at the base cell, on rho_pred and rho_acc.
3. Descriptive captions help CLIP: the least descriptive natural-text level (title, tags or description, each after
   the class name) against full text: rho_pred lower and top-1 higher with full text (the paper's text-type line).
4. Template-only CLIP is SL-like: in the (rho_acc, rho_pred) and (rho_acc, top-1) planes the supervised runs that
   vary the sampled vocabulary size (sl and sl_sampled_vocab learners with the cosine head, base cell) lie on a
   trend; CLIP trained on template captions lies closer to that trend (smaller absolute residual) than CLIP trained
   on full text.
5. More data scale helps CLIP: the smallest against the largest `scale` level: rho_acc lower and top-1 higher.
6. Open-world concepts help CLIP: `open_world: false` against `open_world: equal_size` (label-less captions of
   open-world concepts replacing labelled samples, same total: the paper's IN-Caps-100 vs IN-Caps 10%): rho_acc.
7. A frozen pretrained text head helps SL: with a sampled vocabulary, a frozen text head whose language was learned
   on this world (`text_head: clip`) against the same head with fixed random prototypes (`head: frozen_random`, the
   control that separates language from merely fixed, well-spread prototypes): tail-third accuracy.
8. CLIP is robust to imbalance: the difference in differences (SL natural − SL balanced) − (CLIP natural − CLIP
   balanced) on rho_acc_corpus (against the corpus's natural frequency, defined on the balanced level too).
Nothing here knows the expected answer beyond each claim's direction.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

CHANCE_FACTOR = 2.0  # a run whose top-1 is below this multiple of chance (1 / evaluation classes) decides nothing
BASE_CELLS = ("base=base", "imbalance=natural", "caption=full", "scale=1.0", "open_world=false")
TEXT_LEVELS = ("caption=title", "caption=tags", "caption=description")  # least descriptive first
COLUMNS = ["claim", "compares", "metric", "effect", "ci_low", "ci_high", "paper", "seeds", "needed", "verdict"]
Plan = Callable[["Runs"], "tuple[str, Callable[[Runs, int, str], float], list[tuple[str, str]]] | None"]


@dataclass(frozen=True)
class Metric:
    name: str
    paper: float | None  # the effect the paper reports, signed as the claim states it (None: not reported)


@dataclass(frozen=True)
class Claim:
    text: str
    metrics: tuple[Metric, ...]
    # runs -> (what is compared, effect(runs, seed, metric), the (cell, learner) sides used), or None when the study
    # lacks the runs
    plan: Plan


class Runs:
    """A study's run metrics: one row per (cell, learner, seed), with `kind` (the registered learner) and `options`."""

    def __init__(self, run_metrics: pd.DataFrame):
        rm = run_metrics.copy()
        if "cell" not in rm:
            rm["cell"] = rm["factor"] + "=" + rm["level"].astype(str)
        rm["kind"] = rm["kind"] if "kind" in rm else rm["learner"]
        rm["options"] = rm["options"] if "options" in rm else "{}"
        self.df = rm
        cells = list(dict.fromkeys(rm["cell"]))
        self.base = next((c for c in BASE_CELLS if c in cells), cells[0] if cells else None)

    def cell(self, cell: str) -> str:
        return self.base if cell == "<base>" else cell

    def has(self, cell: str, learner: str) -> bool:
        df = self.df
        return bool(((df["cell"] == self.cell(cell)) & (df["learner"] == learner)).any())

    def row(self, cell: str, learner: str, seed: int) -> pd.Series | None:
        df = self.df
        rows = df[(df["cell"] == self.cell(cell)) & (df["learner"] == learner) & (df["seed"] == seed)]
        return None if rows.empty else rows.iloc[0]

    def value(self, cell: str, learner: str, seed: int, metric: str) -> float:
        row = self.row(cell, learner, seed)
        return float("nan") if row is None or pd.isna(row.get(metric)) else float(row[metric])

    def seeds(self, sides: list[tuple[str, str]]) -> list[int]:
        """Seeds at which every side has a run."""
        common = None
        for cell, learner in sides:
            df = self.df
            have = set(df[(df["cell"] == self.cell(cell)) & (df["learner"] == learner)]["seed"])
            common = have if common is None else common & have
        return sorted(common or [])

    def levels(self, factor: str) -> list[str]:
        return list(dict.fromkeys(self.df.loc[self.df["factor"] == factor, "level"].astype(str)))

    def learners_where(self, cell: str, test: Callable[[str, dict], bool]) -> list[str]:
        df = self.df[self.df["cell"] == self.cell(cell)]
        pairs = dict(zip(df["learner"], zip(df["kind"], df["options"])))
        return [name for name, (kind, options) in pairs.items() if test(kind, _options(options))]


def _options(value) -> dict:
    return json.loads(value) if isinstance(value, str) and value else dict(value or {})


def _difference(a: tuple[str, str], b: tuple[str, str], sign: dict[str, int] | None = None):
    """Effect = a − b (times the metric's sign: −1 where the paper states that a is lower)."""
    def effect(runs: Runs, seed: int, metric: str) -> float:
        return (sign or {}).get(metric, 1) * (runs.value(*a, seed, metric) - runs.value(*b, seed, metric))

    return effect


def _pair(a: tuple[str, str], b: tuple[str, str], sign: dict[str, int] | None = None):
    def plan(runs: Runs):
        if not (runs.has(*a) and runs.has(*b)):
            return None
        return f"{runs.cell(a[0])}/{a[1]} vs {runs.cell(b[0])}/{b[1]}", _difference(a, b, sign), [a, b]

    return plan


def _captions(runs: Runs):
    less = next((cell for cell in TEXT_LEVELS if runs.has(cell, "clip")), None)
    if less is None or not runs.has("caption=full", "clip"):
        return None
    a, b = (less, "clip"), ("caption=full", "clip")
    return f"{less}/clip vs caption=full/clip", _difference(a, b, {"top1": -1}), [a, b]


def _scale(runs: Runs):
    levels = sorted(runs.levels("scale"), key=float)
    if len(levels) < 2:
        return None
    a, b = (f"scale={levels[0]}", "clip"), (f"scale={levels[-1]}", "clip")
    return f"{a[0]}/clip vs {b[0]}/clip", _difference(a, b, {"top1": -1}), [a, b]


def _vocabulary_sl(kind: str, options: dict) -> bool:
    return kind in ("sl", "sl_sampled_vocab") and options.get("head", "cosine") == "cosine"


PLANES = {"trend_rho_pred": ("rho_acc", "rho_pred"), "trend_top1": ("rho_acc", "top1")}


def _templates_on_sl_trend(runs: Runs):
    sl = runs.learners_where("<base>", _vocabulary_sl)
    if len(sl) < 2 or not (runs.has("caption=templates", "clip") and runs.has("caption=full", "clip")):
        return None

    def effect(runs: Runs, seed: int, metric: str) -> float:
        x_name, y_name = PLANES[metric]
        points = [(runs.value("<base>", s, seed, x_name), runs.value("<base>", s, seed, y_name)) for s in sl]
        points = np.array([p for p in points if not any(map(math.isnan, p))])
        if len(points) < 2 or np.ptp(points[:, 0]) == 0:
            return float("nan")
        slope, intercept = np.polyfit(points[:, 0], points[:, 1], 1)

        def residual(cell: str) -> float:
            return abs(runs.value(cell, "clip", seed, y_name) - (slope * runs.value(cell, "clip", seed, x_name)
                                                                + intercept))

        return residual("caption=full") - residual("caption=templates")

    sides = [("caption=templates", "clip"), ("caption=full", "clip"), *(("<base>", s) for s in sl)]
    return f"caption=templates/clip vs caption=full/clip, distance to the trend of {', '.join(sl)}", effect, sides


def _frozen_head(runs: Runs):
    language = runs.learners_where("<base>", lambda k, o: k == "sl_sampled_vocab_frozen_text"
                                   and o.get("text_head") == "clip")
    control = runs.learners_where("<base>", lambda k, o: k == "sl_sampled_vocab" and o.get("head") == "frozen_random")
    if not (language and control):
        return None
    a, b = ("<base>", language[0]), ("<base>", control[0])
    return f"{runs.cell(a[0])}/{a[1]} vs {runs.cell(b[0])}/{b[1]}", _difference(a, b), [a, b]


def _imbalance_did(runs: Runs):
    cells = ("imbalance=natural", "imbalance=balanced")
    sides = [(c, learner) for learner in ("sl", "clip") for c in cells]
    if not all(runs.has(*side) for side in sides):
        return None

    def effect(runs: Runs, seed: int, metric: str) -> float:
        v = {side: runs.value(*side, seed, metric) for side in sides}
        return (v[sides[0]] - v[sides[1]]) - (v[sides[2]] - v[sides[3]])

    return "(sl natural − balanced) − (clip natural − balanced)", effect, sides


CLAIMS = (
    Claim("SL is more biased than CLIP", (Metric("rho_pred", 0.49), Metric("rho_acc", 0.24)),
          _pair(("<base>", "sl"), ("<base>", "clip"))),
    Claim("a sampled vocabulary debiases SL", (Metric("rho_pred", 0.47), Metric("rho_acc", 0.13)),
          _pair(("<base>", "sl"), ("<base>", "sl_sampled_vocab"))),
    Claim("descriptive captions help CLIP", (Metric("rho_pred", 0.15), Metric("top1", 0.10)), _captions),
    Claim("template-only CLIP is SL-like", (Metric("trend_rho_pred", 0.45), Metric("trend_top1", 0.17)),
          _templates_on_sl_trend),
    Claim("more data scale helps CLIP", (Metric("rho_acc", 0.05), Metric("top1", 0.16)), _scale),
    Claim("open-world concepts help CLIP", (Metric("rho_acc", 0.09),),
          _pair(("open_world=false", "clip"), ("open_world=equal_size", "clip"))),
    Claim("a frozen pretrained text head helps SL", (Metric("tail_acc", 0.11),), _frozen_head),
    Claim("CLIP is robust to imbalance (SL is hurt more)", (Metric("rho_acc_corpus", None),), _imbalance_did),
)
# signs: each comparison puts the side the paper finds more biased first, so a − b > 0 on a rho is the claim; claims 3
# and 5 state that the second side has the higher top-1, hence their sign on top1.


def interval(effects: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval of per-seed effects (NaN bounds with fewer than 2)."""
    mean = float(np.mean(effects)) if len(effects) else float("nan")
    if len(effects) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(effects) - 1) * np.std(effects, ddof=1) / np.sqrt(len(effects))
    return mean, mean - half, mean + half


def seeds_needed(effects: np.ndarray, target: float | None) -> int | None:
    """Seeds whose 95% interval would be narrower (half-width) than `target` at the measured spread."""
    if target is None or len(effects) < 2 or not np.std(effects, ddof=1) > 0:
        return None
    sd = np.std(effects, ddof=1)
    for n in range(2, 1001):
        if stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) < abs(target):
            return n
    return None


def near_chance(runs: Runs, sides: list[tuple[str, str]], seeds: list[int], classes: int | None) -> str | None:
    """The first run (cell/learner/seed) whose top-1 is within CHANCE_FACTOR x chance, else None."""
    if not classes:
        return None
    for cell, learner in sides:
        for seed in seeds:
            top1 = runs.value(cell, learner, seed, "top1")
            if not math.isnan(top1) and top1 < CHANCE_FACTOR / classes:
                return f"{runs.cell(cell)}/{learner}/s{seed}"
    return None


def verdict_of(lows: list[float], highs: list[float]) -> str:
    if any(math.isnan(v) for v in lows + highs):
        return "inconclusive"
    if any(h < 0 for h in highs):
        return "contradicted"
    return "reproduced" if all(lo > 0 for lo in lows) else "inconclusive"


def measure(claim: Claim, runs: Runs, classes: int | None) -> list[dict]:
    """One row per metric of the claim: the metric's own verdict and the claim's (`verdict`, the same on every row)."""
    planned = claim.plan(runs)
    if planned is None:
        return [{"claim": claim.text, "compares": "", "metric": m.name, "effect": np.nan, "ci_low": np.nan,
                 "ci_high": np.nan, "paper": m.paper, "seeds": 0, "needed": None, "metric_verdict": "not tested",
                 "verdict": "not tested"} for m in claim.metrics]
    compares, effect, sides = planned
    seeds = runs.seeds(sides)
    rows = []
    for m in claim.metrics:
        effects = np.array([effect(runs, seed, m.name) for seed in seeds], float)
        effects = effects[~np.isnan(effects)]
        mean, low, high = interval(effects)
        own = verdict_of([low], [high])
        if own == "inconclusive" and m.paper is not None and not math.isnan(high):
            if (high - low) / 2 >= abs(m.paper):
                own = "underpowered"  # the interval is wider than the effect the paper reports
            elif 0 < m.paper and high < m.paper:
                own = "smaller than the paper's"  # holds 0 and excludes the paper's effect
        rows.append({"claim": claim.text, "compares": compares, "metric": m.name, "effect": mean, "ci_low": low,
                     "ci_high": high, "paper": m.paper, "seeds": len(effects), "needed": seeds_needed(effects, m.paper),
                     "metric_verdict": own})
    chance = near_chance(runs, sides, seeds, classes)
    overall = (f"near chance ({chance})" if chance else
               verdict_of([r["ci_low"] for r in rows], [r["ci_high"] for r in rows]))
    return [{**row, "verdict": overall} for row in rows]


def claims_table(run_metrics: pd.DataFrame, per_class: pd.DataFrame | None = None,
                 classes: int | None = None) -> pd.DataFrame:
    """One row per (claim, metric) of Wen et al. (2024), measured on a study's runs: `run_metrics` has factor, level,
    learner, seed, the metrics, and `kind` / `options` where learner variants are used. `classes`: the
    number of evaluation classes (chance = 1 / classes; default: the classes in `per_class`)."""
    if classes is None and per_class is not None and "concept_id" in per_class:
        classes = int(per_class["concept_id"].nunique()) or None
    runs = Runs(run_metrics)
    return pd.DataFrame([row for claim in CLAIMS for row in measure(claim, runs, classes)],
                        columns=[*COLUMNS[:-1], "metric_verdict", "verdict"])
