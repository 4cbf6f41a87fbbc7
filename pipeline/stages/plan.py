"""Planning: a study spec (or a `tailstudy match` / `tailstudy ingest` request) -> a graph of nodes, before any work.

vocab ─┬─────────────── match ── frequency ──────────────────────────┐
corpus ┴─ (per level) curate ── (per learner, seed) train ── evaluate ┴─ report
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from tailstudy.errors import InputError
from tailstudy.stages.base import Node, resolve_all, run_local, walk
from tailstudy.stages.frequency import frequency_node
from tailstudy.stages.match import match_node
from tailstudy.stages.train import learner_labels
from tailstudy.stages.vocab import vocab_node
from tailstudy.store import Artifact, Workspace, canonical_json, write_parquet
from tailstudy.vocab import load_vocab

if TYPE_CHECKING:
    from tailstudy.spec import StudySpec


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
        return [n for role, n in self.report.upstream.items() if role.startswith("run")]


def plan_study(spec: StudySpec) -> StudyGraph:
    """Every node of the study; keys of vocab .. curate and report-less stages are computed now, train / evaluate /
    report keys once the subsets they hash exist (``resolve_all``)."""
    # imported here, not at the top: `tailstudy match` plans through this module and needs none of them (spec's
    # pydantic models alone take 0.2-0.4 s to import)
    from tailstudy.spec import Cell, expand
    from tailstudy.stages.corpus import corpus_node
    from tailstudy.stages.curate import curate_node
    from tailstudy.stages.evaluate import evaluate_node
    from tailstudy.stages.report import report_node
    from tailstudy.stages.train import train_node

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
    from tailstudy.matching import MATCHERS, make_matcher
    from tailstudy.matching.inputs import input_digest, resolve_sources
    from tailstudy.preflight import first_duplicate_id

    vocab = vocab_node(load_vocab(vocab_ref), vocab_ref)
    if method not in MATCHERS:
        raise InputError(f"--method {method}: unknown matching method (known: {', '.join(MATCHERS)})")
    sources = resolve_sources(captions, caption_col, id_col)
    first_duplicate_id(sources)  # duplicate ids would merge samples: an error before any work
    with ThreadPoolExecutor(1) as pool:
        digest = pool.submit(input_digest, sources)  # hashing releases the GIL: it overlaps the matcher's build
        try:
            make_matcher(method, vocab.config["vocab"], **dict(options or {}))  # built once, kept for match_node
        except ValueError as err:
            raise InputError(f"--method {method}: {err}") from None
        match = match_node(method, dict(options or {}), vocab, sources=sources, given={"captions": digest.result()},
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
    from tailstudy.catalog import check_corpus_name

    frequency = plan_match(captions, vocab_ref, method, options, caption_col, id_col, corpus)
    labels = {"corpus": frequency.config["corpus"], "vocab": frequency.config["vocab"].name, "method": method}
    check_corpus_name(ws, labels, frequency.key)  # refuse labels another frequency artifact carries
    return run_local(ws, [frequency], lambda node: force and node.stage != "vocab", workers=workers,
                     progress=progress)


# ---------------------------------------------------------------- study records (what the catalog's views join on)

def runs_table(graph: StudyGraph, statuses: dict[str, str]) -> pa.Table:
    rows = []
    for node in graph.evaluations:
        cell, train = node.config["cell"], node.upstream["train"]
        rows.append({"run_id": node.key, "study": graph.spec.name, "factor": cell.factor, "level": cell.level,
                     "model": node.config["learner"], "seed": node.config["seed"],
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


__all__ = ["StudyGraph", "plan_study", "plan_match", "match_captions", "write_study_records"]
