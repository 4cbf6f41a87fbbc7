"""index: the token index of caption files (pipeline/index.py: words with rows and positions, lemmas with rows, the
captions and their normalised text, with the input's URL / image-hash columns where it has them). Key = INDEX_VERSION +
the tokenisers' versions + the files' columns + their content digest, so every match of the same files shares one index
(``tailstudy match --index``)."""
from __future__ import annotations

from pathlib import Path

from tailstudy.index import INDEX_VERSION, build_index, index_config
from tailstudy.matching.inputs import plan_shards, read_with_dedup_keys
from tailstudy.stages.base import BuildContext, Node, Stage


class IndexStage(Stage):
    name = "index"
    VERSION = INDEX_VERSION
    key_roles = ()

    def inputs(self, node: Node) -> dict:
        return {**node.given, "corpus": node.config["corpus"]}

    def build(self, ctx: BuildContext, out: Path) -> dict:
        shards = plan_shards(ctx.config["sources"])
        stats = build_index((b for shard in shards for b in read_with_dedup_keys(shard)), out, ctx.progress)
        return {"rows": {"captions": stats["captions"], "words": stats["words"]}, "corpus": ctx.config["corpus"],
                "index": stats}


def index_node(sources: list, digest: str, corpus: str) -> Node:
    """The duplicate-key columns (URL, image hash) enter the key only where the input has them, so the index of a
    corpus without them keeps its key."""
    key = {**index_config(), "columns": [[s.name, s.caption_col, s.id_col] for s in sources]}
    if any(s.dedup_columns for s in sources):
        key["dedup_columns"] = [[s.name, s.dedup_columns] for s in sources]
    return Node("index", {"sources": sources, "corpus": corpus, "key": key}, label=corpus, given={"captions": digest})
