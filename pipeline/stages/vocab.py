"""vocab: the vocabulary's concepts as a table. Key = (name, concepts with their synonyms): a vocabulary is its content,
wherever it was read from."""
from __future__ import annotations

from pathlib import Path

from tailstudy.stages.base import BuildContext, Node, Stage
from tailstudy.store import write_parquet
from tailstudy.vocab import Vocabulary


class VocabStage(Stage):
    name = "vocab"
    VERSION = 1

    def key_config(self, config: dict) -> dict:
        vocab: Vocabulary = config["vocab"]
        return {"name": vocab.name, "concepts": vocab.content()}

    def inputs(self, node: Node) -> dict:
        return {"vocabulary": node.config["source"]}

    def build(self, ctx: BuildContext, out: Path) -> dict:
        vocab: Vocabulary = ctx.config["vocab"]
        write_parquet(vocab.to_table(), out / "concepts.parquet")
        return {"rows": {"concepts": len(vocab)}}


def vocab_node(vocab: Vocabulary, source: str) -> Node:
    return Node("vocab", {"vocab": vocab, "source": source}, label=source)
