"""corpus: the study's captions, image shards (each with its member index: tailstudy.corpus.shards) and evaluation
set. Synthetic: the world rendered from its config (key = the world's config + eval per class, unchanged since the
first version). Other sources: the source artifact (hard links) + the eval folder's set + the targets (key = source
key, eval folder listing, vocabulary, targets)."""
from __future__ import annotations

from pathlib import Path

from tailstudy.corpus.shards import index_shards
from tailstudy.corpus.sources import assemble_study_corpus, study_corpus_config
from tailstudy.corpus.synthetic import WORLD_VERSION, generate
from tailstudy.errors import SpecError
from tailstudy.progress import item_bar
from tailstudy.stages.base import BuildContext, Node, Stage
from tailstudy.stages.source import source_node


def corpus_config(spec) -> dict:
    """The corpus key's config slice (see the module doc)."""
    if spec.corpus.source == "synthetic":
        if spec.evaluate.folder:
            raise SpecError("evaluate.folder: only for urls / webdataset / folder corpora (the synthetic world has "
                            "its own evaluation split)")
        # "eval_per_class": the spec section's old name, kept: the corpus key hashes this dict (keys are a promise)
        return {"corpus": spec.corpus.model_dump(mode="json"), "eval_per_class": spec.evaluate.per_class}
    return study_corpus_config(spec)


def _build_synthetic(ctx: BuildContext, out: Path) -> dict:
    spec = ctx.config["spec"]
    stats = generate(spec.corpus, spec.evaluate, out, ctx.progress)
    return {"rows": {"captions": stats["samples"], "eval": stats["eval_samples"]}, "world": stats}


def _build_real(ctx: BuildContext, out: Path) -> dict:
    spec, source = ctx.config["spec"], ctx.artifact("source")
    stats = assemble_study_corpus(source.path, out, spec, ctx.config["vocab"])
    index_shards(out / "shards")  # the shards of a source artifact built before shards had member indexes
    return {"rows": {"captions": stats["samples"], "eval": stats["eval_samples"]}, "source_key": source.key,
            "corpus": stats, "status": source.manifest().get("status")}


class CorpusStage(Stage):
    name = "corpus"
    VERSION = WORLD_VERSION  # the synthetic world's version keys every study corpus
    key_roles = ()

    def key_config(self, config: dict) -> dict:
        return config["key"]

    def inputs(self, node: Node) -> dict:
        spec = node.config["spec"]
        if spec.corpus.source == "synthetic":
            return node.config["key"]
        # "eval": the evaluate section's old name, kept so that manifests read as before
        return {"source": spec.corpus.source, "path": str(spec.corpus.path), "eval": spec.evaluate.folder}

    def progress(self, node: Node):
        synthetic = node.config["spec"].corpus.source == "synthetic"
        return item_bar("corpus: " + ("rendering the synthetic world" if synthetic else "adding the eval set"))

    def build(self, ctx: BuildContext, out: Path) -> dict:
        synthetic = ctx.config["spec"].corpus.source == "synthetic"
        return {**(_build_synthetic if synthetic else _build_real)(ctx, out), "config": ctx.config["key"]}


def corpus_node(spec, vocab) -> Node:
    upstream = {} if spec.corpus.source == "synthetic" else {"source": source_node(spec.corpus)}
    return Node("corpus", {"spec": spec, "vocab": vocab, "key": corpus_config(spec)}, upstream,
                label=spec.corpus.source)
