"""The report's figures, each returned as PNG bytes (no timestamps or version metadata: same data, same bytes)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from tailstudy.frequency import reference_counts, reference_tables  # noqa: E402

# The shipped reference corpora overlaid on the rank-frequency plot (the paper's Fig. 1 sources, ImageNet classes).
REFERENCE_CORPORA = {"laion400m_imagenet": "LAION-400M", "metaclip_400m_imagenet": "MetaCLIP-400M",
                     "laion2b_imagenet": "LAION-2B", "cc12m_imagenet": "CC-12M", "yfcc15m_imagenet": "YFCC-15M",
                     "incaps_imagenet": "IN-Caps"}
TREND_BINS = 6  # equal-count bins of log training frequency for the trend line
# Counts below this sit on the discreteness floor: not part of the ranked body. The figure's fit is its own statistic,
# named so in its legend: imbalance.zipf_exponent (SQL, the Corpus table) is the unweighted fit over all non-zero ranks.
ZIPF_MIN_COUNT = 5


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def zipf_body_fit(counts: np.ndarray) -> tuple[float, float, int]:
    """Zipf fit of the ranked body -> (s, log c, last fitted rank): count ~ c * rank^-s.

    Rule: ranks whose count is at least ZIPF_MIN_COUNT (the body; the tail below sits on the counting floor), least
    squares of log count on log rank with each rank weighted by 1/rank, so every decade of ranks weighs the same and
    the many tail ranks cannot tilt the line away from the head (an unweighted fit over all ranks overshoots it)."""
    y = np.sort(np.asarray(counts, float))[::-1]
    body = y[y >= ZIPF_MIN_COUNT]
    if len(body) < 3:
        return float("nan"), float("nan"), 0
    ranks = np.arange(1, len(body) + 1)
    slope, intercept = np.polyfit(np.log(ranks), np.log(body), 1, w=np.sqrt(1.0 / ranks))
    return float(-slope), float(intercept), len(body)


def rank_frequency_figure(counts: np.ndarray, references: dict[str, np.ndarray], title: str) -> bytes:
    """Share of matches against relative rank (rank / concepts), log-log: this corpus, its Zipf body fit, and the
    shipped reference corpora, each normalised by its own total so that corpora of any size compare."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, ref in references.items():
        ref = np.sort(ref[ref > 0])[::-1]
        ax.loglog(np.arange(1, len(ref) + 1) / len(ref), ref / ref.sum(), linewidth=1, alpha=0.7, label=name)
    y = np.sort(np.asarray(counts, float))[::-1]
    n = len(y)
    if y.sum() > 0:
        ranks = np.arange(1, n + 1)
        ax.loglog(ranks[y > 0] / n, y[y > 0] / y.sum(), "k.", markersize=4, label=f"this corpus ({n} concepts)")
        s, log_c, fitted = zipf_body_fit(y)
        if np.isfinite(s):
            r = np.arange(1, fitted + 1)
            ax.loglog(r / n, np.exp(log_c) * r ** -s / y.sum(), "r-", linewidth=1.5,
                      label=f"Zipf fit of the body (counts ≥ {ZIPF_MIN_COUNT}), s = {s:.2f}")
    ax.set_xlabel("relative rank (rank / concepts)")
    ax.set_ylabel("share of matched captions")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both", linewidth=0.4)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return png_bytes(fig)


def binned_trend(freq: np.ndarray, acc: np.ndarray, bins: int = TREND_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Mean accuracy per equal-count bin of log frequency -> (bin centre frequency, mean accuracy)."""
    order = np.argsort(freq, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
    return (np.array([np.exp(np.mean(np.log(freq[g]))) for g in groups]),
            np.array([acc[g].mean() for g in groups]))


def _class_means(part: pd.DataFrame) -> pd.DataFrame:
    return part.groupby("concept_id").agg(train_count=("train_count", "first"), acc=("acc", "mean"))


def acc_vs_freq_figure(per_class: pd.DataFrame) -> tuple[bytes, list[str]]:
    """One panel per factor level, one colour per learner: per-class accuracy (mean over seeds) against training
    frequency, a binned trend line and Spearman's ρ. Runs shared by two levels (same evaluated run) are drawn once,
    in the first level's panel; the other panel names where they are, and a level whose runs are all drawn elsewhere
    gets no panel (it would be an empty plot): the notes say where its runs are. -> (PNG, notes on shared runs)."""
    learners = list(dict.fromkeys(per_class["learner"]))
    colours = dict(zip(learners, plt.cm.tab10(np.arange(len(learners)) % 10)))
    drawn: dict[frozenset, str] = {}
    notes = []
    plan: dict[str, list] = {}  # level -> [(learner, its rows or None when drawn elsewhere, the level drawn in)]
    for cell in dict.fromkeys(per_class["cell"]):
        plan[cell] = []
        for learner in learners:
            part = per_class[(per_class.cell == cell) & (per_class.learner == learner)]
            if part.empty:
                continue
            runs = frozenset(part.run_id)
            if runs in drawn:
                notes.append(f"{cell} / {learner}: the same training runs as {drawn[runs]} (drawn there)")
                plan[cell].append((learner, None, drawn[runs]))
            else:
                drawn[runs] = cell
                plan[cell].append((learner, part, cell))
    cells = [cell for cell, entries in plan.items() if any(part is not None for _, part, _ in entries)]
    cols = min(3, len(cells))
    rows = -(-len(cells) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.5 * rows), sharey=True, squeeze=False)
    for ax, cell in zip(axes.flat, cells):
        for learner, part, where in plan[cell]:
            if part is None:
                ax.plot([], [], " ", label=f"{learner}: same runs as {where}")
                continue
            means = _class_means(part)
            freq = np.maximum(means.train_count.to_numpy(float), 1)
            acc = means.acc.to_numpy(float)
            rho = spearmanr(freq, acc)[0] if len(np.unique(freq)) > 1 else float("nan")
            ax.scatter(freq, acc, s=10, alpha=0.45, color=colours[learner])
            tx, ty = binned_trend(freq, acc)
            ax.plot(tx, ty, "-o", color=colours[learner], markersize=3, linewidth=1.5,
                    label=f"{learner}: ρ = {'n/a' if np.isnan(rho) else f'{rho:.2f}'}")
        ax.set_xscale("log")
        ax.set_title(cell, fontsize=9)
        ax.set_xlabel("training samples of the class", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.flat[len(cells):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("per-class accuracy")
    fig.tight_layout()
    return png_bytes(fig), notes


def by_level_figure(summary: pd.DataFrame) -> bytes:
    """ρ(freq, predictions) and top-1 per factor level and learner, with seed spread as error bars."""
    summary = summary.assign(cell=summary.factor + "=" + summary.level)
    cells = list(dict.fromkeys(summary.cell))
    learners = list(dict.fromkeys(summary.learner))
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 1.3 * len(cells) * 2), 3.8))
    width = 0.8 / max(1, len(learners))
    x = np.arange(len(cells))
    for ax, metric, title in ((axes[0], "rho_pred", "ρ(train frequency, predictions)"), (axes[1], "top1", "top-1")):
        for i, learner in enumerate(learners):
            part = summary[summary.learner == learner].set_index("cell").reindex(cells)
            xs = x + i * width - 0.4 + width / 2
            ax.bar(xs, part[metric], width, yerr=part[f"{metric}_sd"], label=learner, capsize=2)
            for xi, value in zip(xs, part[metric]):
                if np.isnan(value):  # e.g. rho on a balanced subset: every class has the same count
                    ax.text(xi, 0.01, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="grey")
        ax.set_xticks(x, cells, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def reference_corpora() -> dict[str, np.ndarray]:
    """The shipped reference corpora's class counts (tailstudy.frequency.reference_counts), by display name."""
    known = set(reference_tables())
    return {label: np.array(list(reference_counts(source).values()), float)
            for source, label in REFERENCE_CORPORA.items() if source in known}
