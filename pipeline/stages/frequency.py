"""frequency: how often each concept occurs in one match artifact -> concept_freq.parquet, imbalance.parquet
(imbalance statistics + caption coverage) and rank_frequency.png. Key = the match and vocab keys (and, for
`tailstudy match`, the corpus name and method written into the tables)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tailstudy.arrays import arrow_repeat, numpy_ints
from tailstudy.frequency import (FREQUENCY_VERSION, caption_coverage, concept_freq, imbalance_stats, one_row_table,
                                 rank_frequency_figure)
from tailstudy.stages.base import BuildContext, Node, Stage
from tailstudy.store import write_parquet


def read_parts(folder: Path, columns: list[str]) -> pa.Table:
    """The match artifact's part files, in name order, as one table (ParquetFile: pq.read_table's dataset layer
    imports pandas, 0.3 s)."""
    parts = sorted(folder.glob("*.parquet"))
    if not parts:  # a match artifact always has a part per shard; read_table's own error if not
        return pq.read_table(folder, columns=columns)
    return pa.concat_tables([pq.ParquetFile(p).read(columns=columns) for p in parts])


def _labelled_freq(vocab, matches: pa.Table, labels: dict) -> pa.Table:
    concepts = vocab.concepts
    freq = concept_freq(np.array([c.concept_id for c in concepts]), [c.name for c in concepts],
                        numpy_ints(matches.column("concept_id")))
    n = freq.num_rows
    return pa.table({**{k: arrow_repeat(v, n) for k, v in labels.items()},
                     **{name: freq.column(name) for name in freq.column_names}})


class FrequencyStage(Stage):
    name = "frequency"
    VERSION = FREQUENCY_VERSION
    key_roles = ("match", "vocab")

    def inputs(self, node: Node) -> dict:
        return {"match": node.upstream["match"].key, **node.config["key"]}

    def build(self, ctx: BuildContext, out: Path) -> dict:
        match = ctx.artifact("match")
        vocab, corpus, method = ctx.config["vocab"], ctx.config["corpus"], ctx.config["method"]
        matches = read_parts(match.path / "matches", ["sample_id", "concept_id"])
        labels = {"corpus": corpus, "vocab": vocab.name, "method": method}
        freq = _labelled_freq(vocab, matches, labels)
        write_parquet(freq, out / "concept_freq.parquet")
        stats = {**imbalance_stats(numpy_ints(freq.column("count"))),
                 **caption_coverage(int(match.manifest()["rows"]["captions"]), matches.column("sample_id"))}
        write_parquet(one_row_table({**labels, **stats}), out / "imbalance.parquet")
        rank_frequency_figure(numpy_ints(freq.column("count")), out / "rank_frequency.png",
                              f"{corpus} · {vocab.name} · {method}")
        return {"rows": {"concept_freq": freq.num_rows}, "imbalance": stats, **labels}


def frequency_node(match: Node, corpus: str, keyed: bool) -> Node:
    """`keyed`: the corpus name and method enter the key (`tailstudy match`, where the name is the user's label);
    in a study the name is derived from the corpus key, which the match key already hashes."""
    method = match.config["method"]
    key = {"corpus": corpus, "method": method} if keyed else {}
    return Node("frequency", {"vocab": match.config["vocab"], "corpus": corpus, "method": method, "key": key},
                {"match": match, "vocab": match.upstream["vocab"]}, label=match.config["vocab"].name)
