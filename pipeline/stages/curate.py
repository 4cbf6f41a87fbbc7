"""curate: one subset of the corpus per factor level -> subset.parquet (sample, copy, label, caption) and
subset_freq.parquet, with content digests that training keys hash. Key = the level's subset spec + the corpus seed +
the corpus, match and vocab keys. The rules of each factor live in tailstudy.curate."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tailstudy.curate import CURATE_VERSION, curate
from tailstudy.items import target_concepts
from tailstudy.spec import Cell
from tailstudy.stages.base import BuildContext, Node, Stage
from tailstudy.store import canonical_json, write_parquet


def cell_id(cell: Cell) -> str:
    return f"{cell.factor}={cell.level}"


def subset_digests(manifest: pa.Table) -> dict[str, str]:
    """What a learner reads of a subset: labels alone, or labels and captions (see the train stage's key)."""
    # supervised learners never see label-less (open-world) rows, so they are not part of what they read
    labels = manifest.select(["sample_id", "copy", "label"]).filter(pc.is_valid(manifest.column("label")))
    return {"labels": hashlib.sha256(canonical_json(labels.to_pydict()).encode()).hexdigest()[:16],
            "labels_captions": hashlib.sha256(canonical_json(manifest.to_pydict()).encode()).hexdigest()[:16]}


class CurateStage(Stage):
    name = "curate"
    VERSION = CURATE_VERSION

    def inputs(self, node: Node) -> dict:
        return {"corpus": node.upstream["corpus"].key, "match": node.upstream["match"].key,
                "subset": node.config["key"]["subset"]}

    def build(self, ctx: BuildContext, out: Path) -> dict:
        vocab, cell = ctx.config["vocab"], ctx.config["cell"]
        corpus_dir = ctx.path("corpus")
        captions = pq.read_table(corpus_dir / "captions.parquet")
        matches = pq.read_table(ctx.path("match") / "matches")
        names = {c.concept_id: c.name for c in vocab.concepts}
        synonyms = {c.concept_id: c.synonyms for c in vocab.concepts}
        manifest, freq, stats = curate(captions, matches, target_concepts(corpus_dir), names, cell.subset,
                                       ctx.config["key"]["seed"], synonyms)
        write_parquet(manifest, out / "subset.parquet")
        write_parquet(freq, out / "subset_freq.parquet")
        return {"rows": {"subset": manifest.num_rows}, "achieved": stats, "digests": subset_digests(manifest),
                "level": cell.subset.model_dump(mode="json")}


def curate_node(cell: Cell, seed: int, corpus: Node, match: Node) -> Node:
    config = {"cell": cell, "vocab": match.config["vocab"],
              "key": {"subset": cell.subset.model_dump(mode="json"), "seed": seed}}
    return Node("curate", config, {"corpus": corpus, "match": match, "vocab": match.upstream["vocab"]},
                label=cell_id(cell))
