"""Study report: a runs table (mean and spread over seeds), per-class accuracy vs frequency, rho and top-1 per level."""
from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SUMMARY_METRICS = ["top1", "top5", "rho_acc", "rho_pred", "head_acc", "mid_acc", "tail_acc", "nc1", "nc2",
                   "acc_logfreq_slope", "rho_acc_corpus", "rho_pred_corpus"]


def summarise(run_metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per (factor, level, model)."""
    grouped = run_metrics.groupby(["factor", "level", "model"], sort=False)
    mean = grouped[SUMMARY_METRICS].mean()
    std = grouped[SUMMARY_METRICS].std(ddof=0).add_suffix("_sd")
    out = mean.join(std).reset_index()
    out.insert(3, "seeds", grouped.size().to_numpy())
    return out


def figure_acc_vs_freq(per_class: pd.DataFrame, path: Path) -> None:
    """Per-class accuracy against training frequency (log x), one panel per learner, one colour per level."""
    models = list(dict.fromkeys(per_class["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), sharey=True, squeeze=False)
    cells = list(dict.fromkeys(per_class["cell"]))
    colours = plt.cm.tab10(np.linspace(0, 1, max(10, len(cells))))
    for ax, model in zip(axes[0], models):
        for colour, cell in zip(colours, cells):
            part = per_class[(per_class.model == model) & (per_class.cell == cell)]
            if part.empty:
                continue
            part = part.groupby("concept_id").agg(train_count=("train_count", "first"), acc=("acc", "mean"))
            ax.scatter(np.maximum(part.train_count, 1), part.acc, s=9, alpha=0.6, color=colour, label=cell)
        ax.set_xscale("log")
        ax.set_title(model)
        ax.set_xlabel("training samples of the class")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("per-class accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_by_level(summary: pd.DataFrame, path: Path) -> None:
    """rho(freq, predictions) and top-1 per factor level and learner, with seed spread as error bars."""
    summary = summary.assign(cell=summary.factor + "=" + summary.level)
    cells = list(dict.fromkeys(summary.cell))
    models = list(dict.fromkeys(summary.model))
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 1.3 * len(cells) * 2), 3.8))
    width = 0.8 / max(1, len(models))
    x = np.arange(len(cells))
    for ax, metric, title in ((axes[0], "rho_pred", "ρ(train frequency, predictions)"), (axes[1], "top1", "top-1")):
        for i, model in enumerate(models):
            part = summary[summary.model == model].set_index("cell").reindex(cells)
            xs = x + i * width - 0.4 + width / 2
            ax.bar(xs, part[metric], width, yerr=part[f"{metric}_sd"], label=model, capsize=2)
            for xi, value in zip(xs, part[metric]):
                if np.isnan(value):  # e.g. rho on a balanced subset: every class has the same count
                    ax.text(xi, 0.01, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="grey")
        ax.set_xticks(x, cells, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def markdown_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(_fmt(v) for v in row) + " |\n" for row in df.itertuples(index=False))


def html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


CLAIMS_NOTE = ("Each claim of Wen et al. (2024) as a measured row: effect = mean over seeds of the paired difference "
               "(first side minus second), 95% t-interval; inconclusive when it contains 0 or fewer than 2 seeds; "
               "'template-only CLIP is SL-like' is reproduced when the interval lies within ±0.1.")


def claims_sections(claims: pd.DataFrame | None) -> tuple[str, str]:
    """The claims table at the top of the report (markdown, html); empty without one."""
    if claims is None or claims.empty:
        return "", ""
    return (f"## Claims\n\n{CLAIMS_NOTE}\n\n{markdown_table(claims)}\n",
            f"<h2>Claims</h2><p>{html.escape(CLAIMS_NOTE)}</p>{html_table(claims)}")


def write_report(study: str, run_metrics: pd.DataFrame, per_class: pd.DataFrame, corpus_stats: dict,
                 out: Path, rank_frequency: Path | None = None, claims: pd.DataFrame | None = None) -> dict:
    """-> files written under `out`: report.md, report.html, figures/*.png, summary.csv."""
    import shutil

    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    corpus_figure_md = corpus_figure_html = ""
    if rank_frequency is not None and rank_frequency.is_file():  # the frequency stage's log-log rank plot
        shutil.copyfile(rank_frequency, figures / "rank_frequency.png")
        corpus_figure_md = "\n![rank-frequency of the matched corpus](figures/rank_frequency.png)\n"
        corpus_figure_html = '<img src="figures/rank_frequency.png">'

    summary = summarise(run_metrics)
    figure_acc_vs_freq(per_class, figures / "acc_vs_freq.png")
    figure_by_level(summary, figures / "by_level.png")
    summary.to_csv(out / "summary.csv", index=False)
    shown = summary[["factor", "level", "model", "seeds", "top1", "top1_sd", "rho_acc", "rho_pred", "rho_pred_sd",
                     "rho_pred_corpus", "head_acc", "tail_acc", "nc1", "nc2"]]
    stats = pd.DataFrame([{k: v for k, v in corpus_stats.items()}])
    intro = (f"Study **{study}**: {len(run_metrics)} runs. ρ is Spearman's rank correlation between a class's training "
             "frequency and its accuracy (rho_acc) or the number of test images predicted as it (rho_pred); lower "
             "means less frequency bias. Differences in ρ under about 0.1 are within seed noise.")
    claims_md, claims_html = claims_sections(claims)
    md = (f"# tailstudy report: {study}\n\n{intro}\n\n{claims_md}## Runs (mean over seeds)\n\n{markdown_table(shown)}\n"
          f"## Corpus\n\n{markdown_table(stats)}\n{corpus_figure_md}"
          "## Figures\n\n![per-class accuracy vs frequency](figures/acc_vs_freq.png)\n\n"
          "![rho and top-1 per level](figures/by_level.png)\n")
    (out / "report.md").write_text(md)
    intro_html = html.escape(intro).replace(f"**{study}**", f"<b>{html.escape(study)}</b>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tailstudy: {html.escape(study)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}img{{max-width:100%}}</style></head><body>
<h1>tailstudy report: {html.escape(study)}</h1><p>{intro_html}</p>{claims_html}
<h2>Runs (mean over seeds)</h2>{html_table(shown)}
<h2>Corpus</h2>{html_table(stats)}{corpus_figure_html}
<h2>Per-class accuracy vs training frequency</h2><img src="figures/acc_vs_freq.png">
<h2>ρ and top-1 per factor level</h2><img src="figures/by_level.png">
</body></html>"""
    (out / "report.html").write_text(page)
    return {"files": ["report.md", "report.html", "summary.csv", "figures/acc_vs_freq.png", "figures/by_level.png"]}
