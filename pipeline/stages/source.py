"""source: an ingested corpus alone (urls / webdataset / folder; no eval set): what `tailstudy ingest` builds and a
study corpus reuses. Key = the source's content-changing options + its input's digest (tailstudy.corpus.sources).

A urls download works in WORKSPACE/corpus/.work-<key>/ and resumes from there; `refetch: N` re-fetches what still
failed in generation N-1, which is this node's upstream `previous`."""
from __future__ import annotations

from pathlib import Path

from tailstudy.corpus.download_run import check_img2dataset
from tailstudy.corpus.readers import read_url_list
from tailstudy.corpus.shards import index_shards
from tailstudy.corpus.sources import build_folder, build_webdataset, source_config, source_key
from tailstudy.progress import item_bar
from tailstudy.stages.base import BuildContext, Node, Stage


def _build_urls(ctx: BuildContext, cfg, out: Path) -> tuple[dict, dict]:
    check_img2dataset("corpus.source: urls")  # an optional dependency (pyproject's `ingest` extra)
    from tailstudy.corpus.ingest import assemble, download  # pandas: paid by a URL download, never by `match`

    urls = read_url_list(cfg)  # validated before any work file is written
    previous = ctx.path("previous") if "previous" in ctx.node.upstream else None
    work = ctx.ws.scratch_dir("corpus", ctx.node.key)
    report = download(urls, cfg, work, quiet=ctx.options.get("quiet", True), say=ctx.options.get("say"),
                      previous=previous)
    summary = assemble(urls, cfg, work, out, ctx.progress)
    index_shards(out / "shards")  # img2dataset wrote these shards: their member indexes are read once, here
    return summary, {"download": report}


def _build_webdataset(ctx: BuildContext, cfg, out: Path) -> tuple[dict, dict]:
    return build_webdataset(cfg, out, ctx.progress), {}


def _build_folder(ctx: BuildContext, cfg, out: Path) -> tuple[dict, dict]:
    return build_folder(cfg, out, ctx.progress), {}


SOURCE_BUILDERS = {"urls": _build_urls, "webdataset": _build_webdataset, "folder": _build_folder}


class SourceStage(Stage):
    name = "source"
    VERSION = 1  # per source kind: tailstudy.corpus.sources.SOURCE_VERSIONS
    folder = "corpus"

    def key(self, config: dict, upstream: dict[str, str]) -> str:
        return source_key(config["source"])

    def inputs(self, node: Node) -> dict:
        cfg = node.config["source"]
        return {"source": cfg.source, "path": str(cfg.path)}

    def progress(self, node: Node):
        return item_bar(f"corpus: ingesting {node.label}")

    def build(self, ctx: BuildContext, out: Path) -> dict:
        cfg = ctx.config["source"]
        summary, extra = SOURCE_BUILDERS[cfg.source](ctx, cfg, out)
        return {"rows": {"captions": summary["success"], "downloads": summary["samples"]}, "source": cfg.source,
                "status": summary, "config": source_config(cfg), **extra}


def source_node(cfg) -> Node:
    """The source artifact of `cfg`; a urls refetch generation reads the generation before it."""
    upstream = {"previous": source_node(cfg.model_copy(update={"refetch": cfg.refetch - 1}))} \
        if cfg.source == "urls" and cfg.refetch else {}
    node = Node("source", {"source": cfg}, upstream, label=f"{cfg.source}:{Path(cfg.path).name}")
    node.key = SourceStage().key(node.config, {})
    return node
