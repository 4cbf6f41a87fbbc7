"""report: the study's tables and figures over every run (tailstudy.report). Key = the study name + the list of
(level, learner, seed, run_id) it reports, so any re-run evaluation or a changed study re-renders it."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from tailstudy.stages.base import BuildContext, Node, Stage
from tailstudy.stages.curate import cell_id
from tailstudy.stages.train import learner_labels

# 6: the figure legend names its fit (ranked body, counts >= 5), the Corpus table `zipf_exponent (all ranks)`, the
# claims' metric verdict "smaller than the paper's"; 5: the learner column is `learner` (was `model`); 4: "–" for
# undefined values (not nan), no empty panel for a level drawn elsewhere; 3: self-contained HTML, per-level panels,
# reference overlay, distinct run count, claims table
REPORT_VERSION = 6


def evaluations(report: Node) -> list[Node]:
    """The report's evaluate nodes, in study order."""
    return [node for role, node in report.upstream.items() if role.startswith("run")]


def collect_results(ws, evaluate_nodes: list[Node]):
    """-> (run_metrics, per_class) DataFrames of the runs, labelled by factor level and learner."""
    import pandas as pd  # 0.3 s+: `tailstudy match` imports this module and never pays it (test_match_speed)

    metrics, per_class = [], []
    for node in evaluate_nodes:
        art = ws.artifact("evaluate", node.key).path
        cell = node.config["cell"]
        labels = {"factor": cell.factor, "level": cell.level, "cell": cell_id(cell), "learner": node.config["learner"],
                  "seed": node.config["seed"], **learner_labels(node.config["run"])}
        metrics.append({**pq.read_table(art / "metrics.parquet").to_pylist()[0], **labels})
        per_class.append(pq.read_table(art / "per_class.parquet").to_pandas().assign(**labels))
    return pd.DataFrame(metrics), pd.concat(per_class, ignore_index=True)


class ReportStage(Stage):
    name = "report"
    VERSION = REPORT_VERSION

    def key(self, config: dict, upstream: dict[str, str]) -> str:
        runs = [[label, learner, seed, upstream[f"run{i}"]] for i, (label, learner, seed) in enumerate(config["runs"])]
        return super().key({"study": config["study"], "runs": runs}, {})

    def key_config(self, config: dict) -> dict:
        return config

    def inputs(self, node: Node) -> dict:
        return {"study": node.config["study"], "runs": len(node.config["runs"])}

    def build(self, ctx: BuildContext, out: Path) -> dict:
        from tailstudy import claims, report  # pandas, scipy, matplotlib (seconds): paid by a report, not by `match`

        run_metrics, per_class = collect_results(ctx.ws, evaluations(ctx.node))
        frequency = ctx.artifact("frequency")
        counts = pq.read_table(frequency.path / "concept_freq.parquet", columns=["count"]).column("count").to_numpy()
        written = report.write_report(ctx.config["study"], run_metrics, per_class, frequency.manifest()["imbalance"],
                                      out, concept_counts=counts, claims=claims.claims_table(run_metrics, per_class))
        return {"rows": {"runs": len(run_metrics)}, **written}

    def upstream_keys(self, node: Node, ws) -> dict[str, str]:
        return {role: up.key for role, up in node.upstream.items() if role.startswith("run")}


def report_node(study: str, evaluate_nodes: list[Node], frequency: Node) -> Node:
    runs = [[cell_id(n.config["cell"]), n.config["learner"], n.config["seed"]] for n in evaluate_nodes]
    upstream = {**{f"run{i}": n for i, n in enumerate(evaluate_nodes)}, "frequency": frequency}
    return Node("report", {"study": study, "runs": runs}, upstream, label=study)
