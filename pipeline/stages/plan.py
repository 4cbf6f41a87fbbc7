"""Planning: a study spec (or a `tailstudy match` / `tailstudy ingest` request) -> a graph of nodes, before any work.

vocab ─┬─────────────── match ── frequency ──────────────────────────┐
corpus ┴─ (per level) curate ── (per learner, seed) train ── evaluate ┴─ report

`tailstudy match --index` adds index (the captions' token index) and describe (over match and index).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from tailstudy.catalog import check_corpus_name
from tailstudy.errors import InputError
from tailstudy.matching import MATCHERS, make_matcher
from tailstudy.matching.inputs import input_digest, plan_shards, read_batches, resolve_sources
from tailstudy.spec import Cell, StudySpec, expand
from tailstudy.stages.base import Node, walk
from tailstudy.stages.corpus import corpus_node
from tailstudy.stages.curate import curate_node
from tailstudy.stages.describe import describe_node
from tailstudy.stages.evaluate import evaluate_node
from tailstudy.stages.frequency import frequency_node
from tailstudy.stages.index import index_node
from tailstudy.stages.match import match_node
from tailstudy.stages.registry import resolve_all, run_local
from tailstudy.stages.report import evaluations, report_node
from tailstudy.stages.train import learner_labels, train_node
from tailstudy.stages.vocab import vocab_node
from tailstudy.store import Artifact, Workspace, canonical_json, write_parquet
from tailstudy.vocab import load_vocab


@dataclass
class StudyGraph:
    spec: StudySpec
    report: Node

    @property
    def nodes(self) -> list[Node]:
        return walk([self.report])

    def of(self, stage: str) -> list[Node]:
        return [n for n in self.nodes if n.stage == stage]

    def node(self, stage: str) -> Node:
        """The one node of a study-wide stage (vocab, corpus, match, frequency, report)."""
        return self.report.find(stage)

    def key(self, stage: str) -> str | None:
        return self.node(stage).key

    @property
    def subset_keys(self) -> dict[str, str]:
        """Factor level ('imbalance=natural') -> its curate key."""
        return {n.label: n.key for n in self.of("curate")}

    @property
    def evaluations(self) -> list[Node]:
        return evaluations(self.report)


def plan_study(spec: StudySpec) -> StudyGraph:
    """Every node of the study; keys of vocab .. curate and report-less stages are computed now, train / evaluate /
    report keys once the subsets they hash exist (``resolve_all``)."""
    vocab = vocab_node(load_vocab(spec.vocabulary), spec.vocabulary)
    corpus = corpus_node(spec, vocab.config["vocab"])
    match = match_node(spec.matching.method, spec.matching.options(), vocab, corpus=corpus)
    resolve_all([match])
    frequency = frequency_node(match, f"{spec.corpus.source}-{corpus.key}", keyed=False)
    frequency.label = spec.vocabulary
    evaluations = []
    base_curate = curate_node(Cell(factor="base", level="base", subset=spec.base), spec.corpus.seed, corpus, match)
    for cell in expand(spec):
        curate = curate_node(cell, spec.corpus.seed, corpus, match)
        for run in spec.learner_runs():
            if run.runs_on(cell, spec.base):
                for seed in spec.seeds:
                    train = train_node(spec, run, seed, curate, corpus, base_curate)
                    evaluations.append(evaluate_node(train, cell, frequency))
    graph = StudyGraph(spec, report_node(spec.name, evaluations, frequency))
    resolve_all(graph.nodes)
    return graph


def plan_match(captions: str | Path, vocab_ref: str, method: str = "phrase", options: dict | None = None,
               caption_col: str | None = None, id_col: str | None = None, corpus: str | None = None) -> Node:
    """``tailstudy match``: the frequency node over the match node of caption files (vocab upstream); checks the
    vocabulary, the method and every input file first. Keys are content-addressed (the files' digest)."""
    vocab = vocab_node(load_vocab(vocab_ref), vocab_ref)
    if method not in MATCHERS:
        raise InputError(f"--method {method}: unknown matching method (known: {', '.join(MATCHERS)})")
    sources = resolve_sources(captions, caption_col, id_col)
    first_duplicate_id(sources)  # duplicate ids would merge samples: an error before any work
    try:
        make_matcher(method, vocab.config["vocab"], **dict(options or {}))  # built once, kept for match_node
    except ValueError as err:
        raise InputError(f"--method {method}: {err}") from None
    match = match_node(method, dict(options or {}), vocab, sources=sources, given={"captions": input_digest(sources)},
                       inputs={"path": str(Path(captions).resolve())})  # "captions" stays the digest
    frequency = frequency_node(match, corpus or Path(captions).name.split(".")[0], keyed=True)
    resolve_all([frequency])
    return frequency


def match_captions(ws: Workspace, captions: str | Path, vocab_ref: str, method: str = "phrase",
                   options: dict | None = None, caption_col: str | None = None, id_col: str | None = None,
                   corpus: str | None = None, workers: int | None = None, progress=None,
                   force: bool = False) -> dict[str, Artifact]:
    """``tailstudy match``: the vocab, match and frequency artifacts of caption files (``plan_match``), built or
    reused in this process; `force` re-matches (the vocabulary is never rebuilt)."""
    frequency = plan_match(captions, vocab_ref, method, options, caption_col, id_col, corpus)
    labels = {"corpus": frequency.config["corpus"], "vocab": frequency.config["vocab"].name, "method": method}
    check_corpus_name(ws, labels, frequency.key)  # refuse labels another frequency artifact carries
    return run_local(ws, [frequency], lambda node: force and node.stage != "vocab", workers=workers,
                     progress=progress)


def first_duplicate_id(sources: list) -> None:
    """Sample ids must be unique across the input (duplicates would be merged into one sample and bias every count):
    one InputError naming the first repeated id (in input order) and a file holding it. Linear: one hash count."""
    if all(s.id_col is None for s in sources):
        return  # row numbers are unique by construction
    parts, owner = [], []
    for shard in plan_shards(sources):
        for ids, _captions in read_batches(shard):
            parts.append(ids.cast(pa.string()))
            owner.append(shard.source)
    if not parts:
        return
    ids = pa.chunked_array(parts, pa.string())
    counts = pc.value_counts(ids)
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(repeated) == 0:
        return
    for part, source in zip(parts, owner):
        hit = pc.index(pc.is_in(part, value_set=repeated), True).as_py()
        if hit >= 0:
            raise InputError(f"{source.path}: column {source.id_col!r}: duplicate sample id {part[hit].as_py()!r} "
                             "(ids must be unique)")


def index_and_describe(ws, captions: str | Path, vocab_ref: str, results: dict, caption_col: str | None = None,
                       id_col: str | None = None, force: bool = False, url_col: str | None = None,
                       hash_col: str | None = None) -> dict:
    """What ``tailstudy match --index`` adds after matching: the index stage, then the describe stage (both in
    pipeline/stages/); `results` = match_captions's artifacts."""
    freq = results["frequency"].manifest()
    labels = {k: freq[k] for k in ("corpus", "vocab", "method")}
    sources = resolve_sources(captions, caption_col, id_col, url_col, hash_col)
    index = index_node(sources, input_digest(sources), labels["corpus"])
    match = Node("match", label=labels["method"], key=results["match"].key)  # built already
    describe = describe_node(match, index, load_vocab(vocab_ref), labels)
    built = run_local(ws, [describe], lambda node: force and node.stage in ("index", "describe"))
    return {"index": built["index"], "describe": built["describe"]}


# ---------------------------------------------------------------- study records (what the catalog's views join on)

def runs_table(graph: StudyGraph, statuses: dict[str, str]) -> pa.Table:
    rows = []
    for node in graph.evaluations:
        cell, train = node.config["cell"], node.upstream["train"]
        rows.append({"run_id": node.key, "study": graph.spec.name, "factor": cell.factor, "level": cell.level,
                     "learner": node.config["learner"], "seed": node.config["seed"],
                     "subset_key": node.upstream["curate"].key, "train_key": train.key,
                     "status": statuses.get(node.key, "planned"), **learner_labels(node.config["run"])})
    return pa.Table.from_pylist(rows)


def study_subsets_table(graph: StudyGraph) -> pa.Table:
    seen = {id(n): n for n in (e.upstream["curate"] for e in graph.evaluations)}
    return pa.Table.from_pylist([{"subset_key": n.key, "study": graph.spec.name, "factor": n.config["cell"].factor,
                                  "level": n.config["cell"].level} for n in seen.values()])


def write_study_records(ws: Workspace, graph: StudyGraph, statuses: dict[str, str]) -> Path:
    """The study's current runs and subsets; rewritten (atomically) on every run of the study."""
    study_dir = ws.root / "studies" / graph.spec.name
    write_parquet(runs_table(graph, statuses), study_dir / "runs.parquet")
    write_parquet(study_subsets_table(graph), study_dir / "subsets.parquet")
    (study_dir / "spec.json").write_text(canonical_json(graph.spec.model_dump(mode="json")))
    return study_dir


__all__ = ["StudyGraph", "plan_study", "plan_match", "match_captions", "index_and_describe", "write_study_records"]
