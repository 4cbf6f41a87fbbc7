"""describe: how descriptive each concept's matched captions are (pipeline/describe.py) ->
concept_descriptiveness.parquet. Key = DESCRIBE_VERSION + the corpus / vocab / method labels + the match and index
keys."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tailstudy.describe import DESCRIBE_VERSION, concept_descriptiveness, openai_templates
from tailstudy.stages.base import BuildContext, Node, Stage
from tailstudy.store import write_parquet


class DescribeStage(Stage):
    name = "describe"
    VERSION = DESCRIBE_VERSION

    def inputs(self, node: Node) -> dict:
        return {**super().inputs(node), **node.config["labels"]}

    def build(self, ctx: BuildContext, out: Path) -> dict:
        labels = ctx.config["labels"]
        matches = pq.read_table(ctx.path("match") / "matches", columns=["sample_id", "concept_id"])
        captions = pq.read_table(ctx.path("index") / "captions", columns=["sample_id", "normalised"])
        table = concept_descriptiveness(matches, captions, ctx.config["vocab"])
        n = table.num_rows
        table = pa.table({**{k: pa.array([v] * n, pa.string()) for k, v in labels.items()},
                          **{name: table.column(name) for name in table.column_names}})
        write_parquet(table, out / "concept_descriptiveness.parquet")
        return {"rows": {"concepts": n}, **labels}


def describe_node(match: Node, index: Node, vocab, labels: dict) -> Node:
    key = {"templates": len(openai_templates()), **labels}
    return Node("describe", {"vocab": vocab, "labels": dict(labels), "key": key}, {"match": match, "index": index},
                label=labels.get("corpus", ""))
