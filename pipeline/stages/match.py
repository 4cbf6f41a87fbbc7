"""match: which concepts each caption mentions, by one matcher (phrase / bag / semantic), shard by shard ->
matches/part-NNNNN.parquet. Key = method + the matcher's version string (rule, normaliser, options) + the captions'
identity (the corpus key in a study; the input files' digest and columns for `tailstudy match`) + the vocab key.

Finished shards wait in the stage's work directory, so a killed run resumes where it stopped; the artifact appears
only when every shard is done. Bad input leaves neither an artifact nor work files."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from tailstudy.errors import InputError
from tailstudy.matching import make_matcher
from tailstudy.matching.inputs import plan_shards, resolve_sources
from tailstudy.matching.sharded import MatcherSpec, part_path, run_shards
from tailstudy.stages.base import BuildContext, Node, Stage
from tailstudy.vocab import Vocabulary


def match_config(method: str, options: dict, vocab: Vocabulary) -> dict:
    """The match stage's config slice: the method and the matcher's version string (rule, normaliser, options)."""
    return {"method": method, "matcher": make_matcher(method, vocab, **options).version}


def _sources(ctx: BuildContext) -> list:
    if "sources" in ctx.config:  # `tailstudy match`: files resolved (and checked) when planning
        return ctx.config["sources"]
    return resolve_sources(ctx.path("corpus") / "captions.parquet", "caption", "sample_id")


class MatchStage(Stage):
    name = "match"
    VERSION = 1
    key_roles = ("corpus", "vocab")

    def inputs(self, node: Node) -> dict:
        return {**super().inputs(node), **node.given, **node.config.get("inputs", {}), "method": node.config["method"]}

    def build(self, ctx: BuildContext, out: Path) -> dict:
        method, options = ctx.config["method"], ctx.config["options"]
        spec = MatcherSpec(method, ctx.config["vocab"], dict(options))
        work = ctx.ws.scratch_dir("match", ctx.node.key)
        if ctx.force:
            shutil.rmtree(work)
            work.mkdir()
        try:
            shards = plan_shards(_sources(ctx))
            stats = run_shards(shards, spec, work, ctx.options.get("workers"), ctx.progress,
                               ctx.options.get("map_shards"))
        except InputError:
            shutil.rmtree(work, ignore_errors=True)
            raise
        (out / "matches").mkdir()
        for shard in shards:
            os.replace(part_path(work, shard.index), out / "matches" / part_path(work, shard.index).name)
        return {"rows": {"captions": sum(s["captions"] for s in stats), "matches": sum(s["matches"] for s in stats)},
                "matched_captions": sum(s["matched_captions"] for s in stats), "matcher": spec.build().version,
                "method": method, "options": options, "shards": stats}


def match_node(method: str, options: dict, vocab_node: Node, corpus: Node | None = None, sources: list | None = None,
               given: dict | None = None, inputs: dict | None = None) -> Node:
    """Matches of a study corpus (`corpus`) or of caption files (`sources` with their digest in `given`)."""
    vocab = vocab_node.config["vocab"]
    key = match_config(method, options, vocab)
    config = {"method": method, "options": dict(options), "vocab": vocab, "key": key, "inputs": inputs or {}}
    if sources is not None:
        config["sources"] = sources
        key["columns"] = [[s.name, s.caption_col, s.id_col] for s in sources]
    upstream = {"vocab": vocab_node} if corpus is None else {"corpus": corpus, "vocab": vocab_node}
    return Node("match", config, upstream, label=method, given=dict(given or {}))
