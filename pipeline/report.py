"""Study report: one self-contained HTML page (figures embedded as PNG data, alt text on each), the same as Markdown
with figure files, and the markdown the Prefect UI renders (figures inlined as data URIs: the UI cannot load local
files). Order: the claims table (when the report stage passes one), the run count, runs table, figures, corpus."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tailstudy import figures as F
from tailstudy.output import cell

SUMMARY_METRICS = ["top1", "top5", "rho_acc", "rho_pred", "head_acc", "mid_acc", "tail_acc", "nc1", "nc2",
                   "acc_logfreq_slope", "rho_acc_corpus", "rho_pred_corpus", "top1_caption_prompt"]
PROMPT_GAP = 0.1  # CLIP's top-1 with the evaluation prompts more than 10% below its own captions' prompt: out of
# distribution for its text tower


def summarise(run_metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per (factor, level, learner)."""
    run_metrics = run_metrics.reindex(columns=[*dict.fromkeys([*run_metrics.columns, *SUMMARY_METRICS])])
    grouped = run_metrics.groupby(["factor", "level", "learner"], sort=False)
    mean = grouped[SUMMARY_METRICS].mean()
    std = grouped[SUMMARY_METRICS].std(ddof=0).add_suffix("_sd")
    out = mean.join(std).reset_index()
    out.insert(3, "seeds", grouped.size().to_numpy())
    return out


def _fmt(value) -> str:
    return cell(value)  # the CLI's cells: 3 decimals, "–" where a value is undefined (NaN / None), as the README says


def markdown_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(_fmt(v) for v in row) + " |\n" for row in df.itertuples(index=False))


def html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


@dataclass
class Figure:
    name: str
    title: str
    alt: str
    png: bytes

    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode()


def run_count_line(run_metrics: pd.DataFrame) -> str:
    """Distinct training runs vs evaluated cells: a run shared by two factor levels is one training run."""
    trained = run_metrics["train_key"].nunique()
    return (f"{trained} distinct training runs, evaluated in {len(run_metrics)} cells (factor level × learner × "
            f"seed; a run whose subset content two levels share is trained once and counted under both)")


def build_figures(summary: pd.DataFrame, per_class: pd.DataFrame, concept_counts, study: str) -> tuple[list, list]:
    panels, notes = F.acc_vs_freq_figure(per_class)
    found = [Figure("acc_vs_freq", "Per-class accuracy vs training frequency, per factor level",
                    "Per-class accuracy against training frequency (log scale), one panel per factor level, one "
                    "colour per learner, with a binned trend line and Spearman's rho in each legend", panels),
             Figure("by_level", "ρ and top-1 per factor level",
                    "Bar charts of rho(train frequency, predictions) and top-1 accuracy per factor level and "
                    "learner, with seed spread as error bars", F.by_level_figure(summary))]
    if concept_counts is not None:
        refs = F.reference_corpora()
        found.append(Figure("rank_frequency", "Rank-frequency of the matched corpus and reference corpora",
                            "Log-log share of matched captions against relative concept rank for this corpus, its "
                            f"Zipf body fit and the reference corpora {', '.join(refs)}",
                            F.rank_frequency_figure(np.asarray(concept_counts), refs, study)))
    return found, notes


def html_page(study: str, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tailstudy: {html.escape(study)}</title>
<style>body{{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse;
font-size:13px;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#f3f3f3}}
img{{max-width:100%;display:block;margin:.5em 0}}p.note{{color:#555;font-size:13px}}</style></head><body>
<h1>tailstudy report: {html.escape(study)}</h1>{body}</body></html>
"""


CLAIMS_NOTE = ("Each claim of Wen et al. (2024) as measured rows, one per metric (tailstudy.claims): effect = mean "
               "over seeds of the per-seed effect, signed so that > 0 is what the paper states, with its 95% "
               "t-interval; 'paper' = the effect the paper reports; 'needed' = seeds whose interval would be "
               "narrower than that effect at the measured spread. A claim is reproduced when every metric's interval "
               "lies above 0, contradicted when one lies below 0, inconclusive otherwise, and decides nothing when a "
               "run it uses is within 2x chance top-1. A metric's own verdict, where the claim's does not say it: "
               "underpowered (its interval is wider than the paper's effect) or smaller than the paper's (its "
               "interval holds 0 and lies below the paper's effect).")


def prompt_warnings(summary: pd.DataFrame) -> list[str]:
    """One line per CLIP level whose evaluation prompts score well below the prompt of its own captions."""
    out = []
    for row in summary.itertuples(index=False):
        own = getattr(row, "top1_caption_prompt", float("nan"))
        if own == own and own > 0 and row.top1 < (1 - PROMPT_GAP) * own:
            out.append(f"{row.factor}={row.level}/{row.learner}: top-1 {row.top1:.3f} with the evaluation prompts but "
                       f"{own:.3f} with its own captions' prompt: the prompts are out of distribution for this text "
                       "tower, so its results reflect the prompts more than the data.")
    return out


def write_report(study: str, run_metrics: pd.DataFrame, per_class: pd.DataFrame, corpus_stats: dict,
                 out: Path, *, concept_counts=None,
                 claims: pd.DataFrame | None = None) -> dict:
    """-> files written under `out`: report.html (self-contained), report.md + figures/*.png, report_ui.md (figures
    inlined, for Prefect), summary.csv. `claims` (tailstudy.claims.claims_table) goes first when given; the
    rank-frequency figure is drawn from `concept_counts`."""
    summary = summarise(run_metrics)
    figs, notes = build_figures(summary, per_class, concept_counts, study)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for fig in figs:
        (out / "figures" / f"{fig.name}.png").write_bytes(fig.png)
    summary.to_csv(out / "summary.csv", index=False)
    shown = summary[["factor", "level", "learner", "seeds", "top1", "top1_sd", "top1_caption_prompt", "rho_acc",
                     "rho_pred", "rho_pred_sd", "rho_pred_corpus", "head_acc", "tail_acc", "nc1", "nc2"]]
    # the figure fits the ranked body; this is the catalog's imbalance.zipf_exponent: one name per statistic
    stats = pd.DataFrame([dict(corpus_stats)]).rename(columns={"zipf_exponent": "zipf_exponent (all ranks)"})
    intro = (f"{run_count_line(run_metrics)}. ρ is Spearman's rank correlation between a class's training frequency "
             "and its accuracy (rho_acc) or the number of test images predicted as it (rho_pred); lower means less "
             "frequency bias. top1_caption_prompt: CLIP scored with the prompt its own captions use (the paper's 80 "
             "templates are in distribution when it is close to top1).")
    tables = ([("Claims", claims)] if claims is not None and len(claims) else []) + \
             [("Runs (mean over seeds)", shown)]
    note_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)  # shown under the panels
    warnings = " ".join(prompt_warnings(summary))
    lead = {"Claims": CLAIMS_NOTE, "Runs (mean over seeds)": f"{intro} {warnings}".strip()}  # above each table
    html_sections = [(t, f"<p>{html.escape(lead[t])}</p>" + html_table(df)) for t, df in tables]
    html_sections += [(f.title, f'<img src="{f.data_uri()}" alt="{html.escape(f.alt)}">'
                       + (note_html if f.name == "acc_vs_freq" else "")) for f in figs]
    html_sections.append(("Corpus", html_table(stats)))
    (out / "report.html").write_text(html_page(study, html_sections))
    md_tables = "".join(f"## {t}\n\n{lead[t] if t == 'Claims' else ''}\n\n{markdown_table(df)}\n" for t, df in tables)
    md_notes = "".join(f"- {n}\n" for n in notes)
    for name, src in (("report.md", lambda f: f"figures/{f.name}.png"), ("report_ui.md", Figure.data_uri)):
        md_figs = "".join(f"## {f.title}\n\n![{f.alt}]({src(f)})\n\n" for f in figs)
        (out / name).write_text(f"# tailstudy report: {study}\n\n{intro}\n\n{md_tables}{md_figs}{md_notes}"
                                f"\n## Corpus\n\n{markdown_table(stats)}")
    return {"files": ["report.html", "report.md", "report_ui.md", "summary.csv",
                      *(f"figures/{f.name}.png" for f in figs)]}
