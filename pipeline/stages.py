"""The study's stages as pure functions: (workspace, config, upstream artifacts) -> artifact directory.

Planning (computing every stage key) is separate from building, so an orchestrator can decide what to reuse before
any work starts. Each ``build_*`` is idempotent: an existing artifact with the same key is reused unless forced.
"""
from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import __version__
from pipeline.curate import CURATE_VERSION, curate
from pipeline.errors import InputError
from pipeline.frequency import FREQUENCY_VERSION, caption_coverage, concept_freq, imbalance_stats
from pipeline.matching import MATCHERS, make_matcher
from pipeline.spec import Cell, StudySpec, TrainSpec
from pipeline.store import Workspace, canonical_json, stage_key, write_parquet
from pipeline.vocab import Vocabulary, load_vocab

VOCAB_VERSION = 1
MATCH_VERSION = 1
REPORT_VERSION = 2
STAGES = ("vocab", "corpus", "match", "frequency", "curate", "train", "evaluate", "report")


@dataclass(frozen=True)
class StageResult:
    stage: str
    key: str
    status: str  # "ran" | "reused"
    path: Path
    label: str = ""

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / "manifest.json").read_text())


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact, read from package metadata (no heavy imports)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"tailstudy": __version__, "python": platform.python_version()}
    for package in ("pyarrow", "duckdb", "numpy", "torch", "open_clip_torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:  # pragma: no cover - data-only installs
            pass
    return found


def run_stage(ws: Workspace, stage: str, key: str, inputs: dict[str, Any], build: Callable[[Path], dict],
              force: bool = False, label: str = "") -> StageResult:
    """Reuse the artifact at (stage, key) or build it atomically; `force` rebuilds and swaps it in."""
    final = ws.root / stage / key
    if ws.exists(stage, key) and not force:
        return StageResult(stage, key, "reused", final, label)
    with ws.artifact_lock(stage, key):  # one builder per artifact; a concurrent one may have finished meanwhile
        if ws.exists(stage, key) and not force:
            return StageResult(stage, key, "reused", final, label)
        manifest: dict[str, Any] = {"inputs": inputs, "library": library_versions()}
        with ws.build(stage, key, manifest, replace=force) as out:
            manifest.update(build(out))
    return StageResult(stage, key, "ran", final, label)


# ---------------------------------------------------------------- plan

@dataclass
class RunPlan:
    cell: Cell
    model: str
    seed: int
    subset_key: str
    train_key: str
    eval_key: str


@dataclass
class StudyPlan:
    spec: StudySpec
    vocab: Vocabulary
    vocab_key: str
    corpus_key: str
    match_key: str
    frequency_key: str
    subset_keys: dict[str, str]  # "factor=level" -> subset key
    cells: list[Cell] = field(default_factory=list)
    runs: list[RunPlan] = field(default_factory=list)
    report_key: str = ""


def corpus_config(spec: StudySpec) -> dict:
    """The corpus key's config slice. Synthetic: the world's config (unchanged since the first version). Other
    sources: the source artifact's key (input digest + content-changing options), the eval folder's listing, the
    vocabulary and the targets (pipeline.corpus.sources)."""
    if spec.corpus.source == "synthetic":
        if spec.eval.folder:
            from pipeline.errors import SpecError

            raise SpecError("eval.folder: only for urls / webdataset / folder corpora (the synthetic world has its own "
                            "evaluation split)")
        return {"corpus": spec.corpus.model_dump(mode="json"), "eval_per_class": spec.eval.per_class}
    from pipeline.corpus.sources import study_corpus_config

    return study_corpus_config(spec)


def train_config(model: str, cfg: TrainSpec, seed: int) -> dict:
    """The slice of the train config that can change this learner's result (device excluded on purpose)."""
    from pipeline.models import COMMON_OPTIONS, LEARNER_OPTIONS

    options = cfg.model_dump(mode="json")
    slice_ = {k: options[k] for k in (*COMMON_OPTIONS, *LEARNER_OPTIONS[model])}
    return {"model": model, "train": slice_, "seed": seed}


def cell_id(cell: Cell) -> str:
    return f"{cell.factor}={cell.level}"


def plan_study(spec: StudySpec) -> StudyPlan:
    from pipeline.corpus.synthetic import WORLD_VERSION
    from pipeline.spec import expand

    vocab = load_vocab(spec.vocabulary)
    vocab_key = vocab_stage_key(vocab)
    corpus_key = stage_key("corpus", WORLD_VERSION, corpus_config(spec))
    match_key = stage_key("match", MATCH_VERSION, match_config(spec.matching.method, spec.matching.options(), vocab),
                          {"corpus": corpus_key, "vocab": vocab_key})
    frequency_key = stage_key("frequency", FREQUENCY_VERSION, {}, {"match": match_key, "vocab": vocab_key})
    plan = StudyPlan(spec, vocab, vocab_key, corpus_key, match_key, frequency_key, {})
    for cell in expand(spec):
        plan.cells.append(cell)
        plan.subset_keys[cell_id(cell)] = stage_key(
            "curate", CURATE_VERSION, {"subset": cell.subset.model_dump(mode="json"), "seed": spec.corpus.seed},
            {"corpus": corpus_key, "match": match_key, "vocab": vocab_key})
    return plan


def plan_runs(ws: Workspace, plan: StudyPlan) -> list[RunPlan]:
    """Train/evaluate keys, once the subsets exist. A run's key hashes the subset *content* its learner reads (labels
    only for supervised learners, labels and captions for CLIP), so levels that differ only in what a learner ignores
    (e.g. captions for SL) share one training run."""
    from pipeline.evaluate import EVALUATE_VERSION
    from pipeline.models import TEXT_LEARNERS
    from pipeline.train import TRAIN_VERSION

    runs = []
    for cell in plan.cells:
        subset_key = plan.subset_keys[cell_id(cell)]
        digests = ws.artifact("curate", subset_key).manifest()["digests"]
        for model in plan.spec.models:
            content = digests["labels_captions"] if model in TEXT_LEARNERS else digests["labels"]
            for seed in plan.spec.seeds:
                train_key = stage_key("train", TRAIN_VERSION, train_config(model, plan.spec.train, seed),
                                      {"subset_content": content})
                eval_key = stage_key("evaluate", EVALUATE_VERSION, {"eval": plan.spec.eval.model_dump(mode="json")},
                                     {"train": train_key, "corpus": plan.corpus_key})
                runs.append(RunPlan(cell, model, seed, subset_key, train_key, eval_key))
    plan.runs = runs
    plan.report_key = stage_key("report", REPORT_VERSION,
                                {"study": plan.spec.name,
                                 "runs": [[cell_id(r.cell), r.model, r.seed, r.eval_key] for r in runs]})
    return runs


def subset_digests(manifest: pa.Table) -> dict[str, str]:
    labels = manifest.select(["sample_id", "copy", "label"])
    return {"labels": hashlib.sha256(canonical_json(labels.to_pydict()).encode()).hexdigest()[:16],
            "labels_captions": hashlib.sha256(canonical_json(manifest.to_pydict()).encode()).hexdigest()[:16]}


# ---------------------------------------------------------------- build

def build_vocab(ws: Workspace, plan: StudyPlan, force: bool = False) -> StageResult:
    return build_vocab_artifact(ws, plan.vocab, plan.spec.vocabulary, force)


def build_corpus(ws: Workspace, plan: StudyPlan, force: bool = False, progress=None) -> StageResult:
    if plan.spec.corpus.source != "synthetic":
        return build_real_corpus(ws, plan, force, progress)
    from pipeline.corpus.synthetic import generate

    def build(out: Path) -> dict:
        stats = generate(plan.spec.corpus, plan.spec.eval, out, progress)
        return {"rows": {"captions": stats["samples"], "eval": stats["eval_samples"]}, "world": stats,
                "config": corpus_config(plan.spec)}

    return run_stage(ws, "corpus", plan.corpus_key, corpus_config(plan.spec), build, force)


def build_source(ws: Workspace, cfg, force: bool = False, progress=None, quiet: bool = True,
                 say: Callable[[str], None] | None = None) -> StageResult:
    """The ingested corpus alone (urls / webdataset / folder; no eval set): what `tailstudy ingest` builds and a study
    corpus reuses. A urls download works in WORKSPACE/corpus/.work-<key>/ and resumes from there when interrupted."""
    from pipeline.corpus import sources

    key = sources.source_key(cfg)

    def build(out: Path) -> dict:
        if cfg.source == "urls":
            from pipeline.corpus.ingest import assemble, download
            from pipeline.corpus.readers import read_url_list

            urls = read_url_list(cfg)  # validated before any work file is written
            previous = None
            if cfg.refetch:  # the preceding generation (built or reused), whose failures this one re-fetches
                previous = build_source(ws, cfg.model_copy(update={"refetch": cfg.refetch - 1}), False, progress,
                                        quiet, say).path
            work = ws.scratch_dir("corpus", key)
            report = download(urls, cfg, work, quiet=quiet, say=say, previous=previous)
            summary = assemble(urls, cfg, work, out, progress)
            extra = {"download": report}
        elif cfg.source == "webdataset":
            summary, extra = sources.build_webdataset(cfg, out, progress), {}
        else:
            summary, extra = sources.build_folder(cfg, out, progress), {}
        return {"rows": {"captions": summary["success"], "downloads": summary["samples"]}, "source": cfg.source,
                "status": summary, "config": sources.source_config(cfg), **extra}

    return run_stage(ws, "corpus", key, {"source": cfg.source, "path": str(cfg.path)}, build, force,
                     label=f"{cfg.source}:{Path(cfg.path).name}")


def build_real_corpus(ws: Workspace, plan: StudyPlan, force: bool = False, progress=None) -> StageResult:
    """A study corpus over a non-synthetic source: the source artifact (built or reused) + eval set + targets."""
    from pipeline.corpus.sources import assemble_study_corpus

    config = corpus_config(plan.spec)

    def build(out: Path) -> dict:
        source = build_source(ws, plan.spec.corpus, progress=progress)
        stats = assemble_study_corpus(source.path, out, plan.spec, plan.vocab)
        return {"rows": {"captions": stats["samples"], "eval": stats["eval_samples"]}, "source_key": source.key,
                "source_status": source.status, "corpus": stats, "status": source.manifest().get("status"),
                "config": config}

    inputs = {"source": plan.spec.corpus.source, "path": str(plan.spec.corpus.path), "eval": plan.spec.eval.folder}
    return run_stage(ws, "corpus", plan.corpus_key, inputs, build, force)


def match_config(method: str, options: dict, vocab: Vocabulary) -> dict:
    """The match stage's config slice: the method and the matcher's version string (rule, normaliser, options)."""
    return {"method": method, "matcher": make_matcher(method, vocab, **options).version}


def vocab_stage_key(vocab: Vocabulary) -> str:
    return stage_key("vocab", VOCAB_VERSION, {"name": vocab.name, "concepts": vocab.content()})


def build_vocab_artifact(ws: Workspace, vocab: Vocabulary, source: str, force: bool = False) -> StageResult:
    """The vocab artifact of a vocabulary used outside a study (``tailstudy match``); same key as in a study."""
    def build(out: Path) -> dict:
        write_parquet(vocab.to_table(), out / "concepts.parquet")
        return {"rows": {"concepts": len(vocab)}}

    return run_stage(ws, "vocab", vocab_stage_key(vocab), {"vocabulary": source}, build, force)


def run_match_stage(ws: Workspace, key: str, sources: list, method: str, options: dict, vocab: Vocabulary,
                    inputs: dict, force: bool = False, workers: int | None = None, progress=None,
                    map_shards=None) -> StageResult:
    """Match caption sources shard by shard -> WORKSPACE/match/<key>/matches/part-NNNNN.parquet (one per shard).

    Finished shards wait in the stage's work directory, so a killed run resumes where it stopped; the artifact appears
    only when every shard is done. Bad input leaves neither an artifact nor work files."""
    import os
    import shutil

    from pipeline.matching.inputs import plan_shards
    from pipeline.matching.sharded import MatcherSpec, part_path, run_shards

    spec = MatcherSpec(method, vocab, dict(options))

    def build(out: Path) -> dict:
        work = ws.scratch_dir("match", key)
        if force:
            shutil.rmtree(work)
            work.mkdir()
        try:
            shards = plan_shards(sources)
            stats = run_shards(shards, spec, work, workers, progress, map_shards)
        except InputError:
            shutil.rmtree(work, ignore_errors=True)
            raise
        (out / "matches").mkdir()
        for shard in shards:
            os.replace(part_path(work, shard.index), out / "matches" / part_path(work, shard.index).name)
        return {"rows": {"captions": sum(s["captions"] for s in stats), "matches": sum(s["matches"] for s in stats)},
                "matched_captions": sum(s["matched_captions"] for s in stats), "matcher": spec.build().version,
                "method": method, "options": options, "shards": stats}

    return run_stage(ws, "match", key, inputs, build, force)


def build_match(ws: Workspace, plan: StudyPlan, force: bool = False, workers: int | None = None, progress=None,
                map_shards=None) -> StageResult:
    """Match the corpus's captions. `map_shards(fn, jobs)` runs the per-shard jobs (e.g. as mapped Prefect tasks);
    without it they run in `workers` local processes (default: one per core)."""
    from pipeline.matching.inputs import resolve_sources

    matching = plan.spec.matching
    expected = stage_key("match", MATCH_VERSION, match_config(matching.method, matching.options(), plan.vocab),
                         {"corpus": plan.corpus_key, "vocab": plan.vocab_key})
    if expected != plan.match_key:
        raise InputError("matching options are not part of the plan's match key: plan_study must hash "
                         "make_matcher(method, vocab, **spec.matching.options()).version")
    corpus_dir = ws.artifact("corpus", plan.corpus_key).path
    sources = resolve_sources(corpus_dir / "captions.parquet", "caption", "sample_id")
    inputs = {"corpus": plan.corpus_key, "vocab": plan.vocab_key, "method": matching.method}
    return run_match_stage(ws, plan.match_key, sources, matching.method, matching.options(), plan.vocab, inputs,
                           force, workers, progress, map_shards)


def _corpus_name(plan: StudyPlan) -> str:
    """The `corpus` column of concept_freq: the source kind and the corpus key."""
    return f"{plan.spec.corpus.source}-{plan.corpus_key}"


def run_frequency_stage(ws: Workspace, key: str, match_key: str, vocab: Vocabulary, corpus: str, method: str,
                        inputs: dict, force: bool = False) -> StageResult:
    """concept_freq.parquet, imbalance.parquet (imbalance statistics + caption coverage) and rank_frequency.png of
    one match artifact."""
    from pipeline.frequency import rank_frequency_figure

    match = ws.artifact("match", match_key)

    def build(out: Path) -> dict:
        matches = pq.read_table(match.path / "matches", columns=["sample_id", "concept_id"])
        n_captions = int(match.manifest()["rows"]["captions"])
        concepts = vocab.concepts
        freq = concept_freq(np.array([c.concept_id for c in concepts]), [c.name for c in concepts],
                            matches.column("concept_id").to_numpy())
        n = freq.num_rows
        labels = {"corpus": corpus, "vocab": vocab.name, "method": method}
        freq = pa.table({**{k: pa.array([v] * n, pa.string()) for k, v in labels.items()},
                         **{name: freq.column(name) for name in freq.column_names}})
        write_parquet(freq, out / "concept_freq.parquet")
        stats = {**imbalance_stats(freq.column("count").to_numpy()),
                 **caption_coverage(n_captions, matches.column("sample_id"))}
        write_parquet(pa.table({**{k: [v] for k, v in labels.items()}, **{k: [v] for k, v in stats.items()}}),
                      out / "imbalance.parquet")
        rank_frequency_figure(freq.column("count").to_numpy(), out / "rank_frequency.png",
                              f"{corpus} · {vocab.name} · {method}")
        return {"rows": {"concept_freq": n}, "imbalance": stats, **labels}

    return run_stage(ws, "frequency", key, inputs, build, force)


def build_frequency(ws: Workspace, plan: StudyPlan, force: bool = False) -> StageResult:
    return run_frequency_stage(ws, plan.frequency_key, plan.match_key, plan.vocab, _corpus_name(plan),
                               plan.spec.matching.method, {"match": plan.match_key}, force)


@dataclass(frozen=True)
class MatchPlan:
    """The keys of ``tailstudy match`` on one input, before any work."""

    vocab: Vocabulary
    vocab_key: str
    sources: list
    method: str
    options: dict
    key: str
    upstream: dict


def plan_match(captions: str | Path, vocab_ref: str, method: str = "phrase", options: dict | None = None,
               caption_col: str | None = None, id_col: str | None = None) -> MatchPlan:
    """Check the vocabulary, the method and every input file, and compute the match key (content-addressed)."""
    from pipeline.matching.inputs import input_digest, resolve_sources
    from pipeline.preflight import first_duplicate_id

    options = dict(options or {})
    vocab = load_vocab(vocab_ref)
    if method not in MATCHERS:
        raise InputError(f"--method {method}: unknown matching method (known: {', '.join(MATCHERS)})")
    try:
        config = match_config(method, options, vocab)
    except ValueError as err:
        raise InputError(f"--method {method}: {err}") from None
    sources = resolve_sources(captions, caption_col, id_col)
    first_duplicate_id(sources)  # duplicate ids would merge samples: an error before any work
    config["columns"] = [[s.name, s.caption_col, s.id_col] for s in sources]
    upstream = {"captions": input_digest(sources), "vocab": vocab_stage_key(vocab)}
    return MatchPlan(vocab, upstream["vocab"], sources, method, options,
                     stage_key("match", MATCH_VERSION, config, upstream), upstream)


def match_captions(ws: Workspace, captions: str | Path, vocab_ref: str, method: str = "phrase",
                   options: dict | None = None, caption_col: str | None = None, id_col: str | None = None,
                   corpus: str | None = None, workers: int | None = None, progress=None,
                   force: bool = False) -> dict[str, StageResult]:
    """``tailstudy match``: vocab, match and frequency artifacts of a caption file or folder, keyed by content.

    Every input problem surfaces as one InputError; bad rows found while matching leave no match artifact."""
    plan = plan_match(captions, vocab_ref, method, options, caption_col, id_col)
    vocab_result = build_vocab_artifact(ws, plan.vocab, vocab_ref)
    inputs = {"captions": str(Path(captions).resolve()), **plan.upstream, "method": method}
    match_result = run_match_stage(ws, plan.key, plan.sources, method, plan.options, plan.vocab, inputs, force,
                                   workers, progress)
    corpus = corpus or Path(captions).name.split(".")[0]
    frequency_key = stage_key("frequency", FREQUENCY_VERSION, {"corpus": corpus, "method": method},
                              {"match": plan.key, "vocab": plan.vocab_key})
    frequency_result = run_frequency_stage(ws, frequency_key, plan.key, plan.vocab, corpus, method,
                                           {"match": plan.key, "corpus": corpus}, force)
    return {"vocab": vocab_result, "match": match_result, "frequency": frequency_result}


def target_concepts(ws: Workspace, plan: StudyPlan) -> list[int]:
    """The curate stage's target concepts: the synthetic world's targets, or what a real corpus's `targets` rule
    resolved to when its corpus was built (default: the whole vocabulary)."""
    corpus_dir = ws.artifact("corpus", plan.corpus_key).path
    if (corpus_dir / "world.json").is_file():
        return sorted(json.loads((corpus_dir / "world.json").read_text())["targets"])
    return sorted(json.loads((corpus_dir / "targets.json").read_text())["targets"])


def build_subset(ws: Workspace, plan: StudyPlan, cell: Cell, force: bool = False) -> StageResult:
    key = plan.subset_keys[cell_id(cell)]
    corpus_dir = ws.artifact("corpus", plan.corpus_key).path

    def build(out: Path) -> dict:
        captions = pq.read_table(corpus_dir / "captions.parquet")
        matches = pq.read_table(ws.artifact("match", plan.match_key).path / "matches")
        names = {c.concept_id: c.name for c in plan.vocab.concepts}
        synonyms = {c.concept_id: c.synonyms for c in plan.vocab.concepts}
        manifest, freq, stats = curate(captions, matches, target_concepts(ws, plan), names, cell.subset,
                                       plan.spec.corpus.seed, synonyms)
        write_parquet(manifest, out / "subset.parquet")
        write_parquet(freq, out / "subset_freq.parquet")
        return {"rows": {"subset": manifest.num_rows}, "achieved": stats, "digests": subset_digests(manifest),
                "level": cell.subset.model_dump(mode="json")}

    inputs = {"corpus": plan.corpus_key, "match": plan.match_key, "subset": cell.subset.model_dump(mode="json")}
    return run_stage(ws, "curate", key, inputs, build, force, label=cell_id(cell))


def load_subset_data(ws: Workspace, plan: StudyPlan, subset_key: str):
    """Subset manifest -> images (decoded from the corpus's shards), class indices and captions, in manifest order."""
    import torch

    from pipeline.corpus.shards import load_images
    from pipeline.train import TrainData

    corpus_dir = ws.artifact("corpus", plan.corpus_key).path
    subset_dir = ws.artifact("curate", subset_key).path
    manifest = pq.read_table(subset_dir / "subset.parquet")
    freq = pq.read_table(subset_dir / "subset_freq.parquet").sort_by("concept_id")
    class_ids = freq.column("concept_id").to_pylist()
    captions = pq.read_table(corpus_dir / "captions.parquet", columns=["sample_id", "shard", "key"]).to_pandas()
    wanted = set(manifest.column("sample_id").to_pylist())
    rows = captions[captions.sample_id.isin(wanted)]
    size = plan.spec.corpus.image_size
    images = load_images([corpus_dir / "shards" / s for s in sorted(rows.shard.unique())], set(rows.key), size)
    key_of = dict(zip(rows.sample_id, rows.key))
    missing = [s for s in wanted if key_of.get(s) not in images]
    if missing:
        raise InputError(f"{corpus_dir}: {len(missing)} subset samples have no image in the shards (e.g. {missing[0]})")
    ids = manifest.column("sample_id").to_pylist()
    index_of = {cid: i for i, cid in enumerate(class_ids)}
    stack = np.stack([images[key_of[s]] for s in ids]) if ids else np.zeros((0, size, size, 3), np.uint8)
    labels = [index_of[lab] if lab is not None else -1 for lab in manifest.column("label").to_pylist()]
    data = TrainData(torch.from_numpy(stack), torch.tensor(labels, dtype=torch.long),
                     manifest.column("caption").to_pylist())
    return data, class_ids, freq.column("count").to_pylist()


def build_train(ws: Workspace, plan: StudyPlan, run: RunPlan, force: bool = False, progress=None) -> StageResult:
    import torch

    from pipeline.integrity import discard_unreadable
    from pipeline.locks import stderr_say
    from pipeline.train import CHECKPOINT, train

    def build(out: Path) -> dict:
        data, class_ids, counts = load_subset_data(ws, plan, run.subset_key)
        work = ws.scratch_dir("train", run.train_key, fresh=force)  # --force train never resumes
        discard_unreadable(work / CHECKPOINT, lambda p: torch.load(p, map_location="cpu", weights_only=False),
                           stderr_say)
        names = {c.concept_id: c.name for c in plan.vocab.concepts}
        learner, log = train(run.model, data, counts, plan.spec.train, run.seed, work, progress,
                             [names[c] for c in class_ids])
        torch.save({"model": learner.state_dict(), "class_ids": class_ids, "class_counts": counts}, out / "model.pt")
        write_parquet(pa.Table.from_pylist(log), out / "train_log.parquet")
        return {"rows": {"train_samples": int(len(data.labels))}, "model": run.model, "seed": run.seed,
                "class_ids": class_ids, "class_counts": counts, "final_loss": log[-1]["loss"],
                "train_config": train_config(run.model, plan.spec.train, run.seed)}

    inputs = {"subset": run.subset_key, **train_config(run.model, plan.spec.train, run.seed)}
    return run_stage(ws, "train", run.train_key, inputs, build, force, label=f"{cell_id(run.cell)}/{run.model}/s{run.seed}")


def build_evaluate(ws: Workspace, plan: StudyPlan, run: RunPlan, force: bool = False) -> StageResult:
    import torch

    from pipeline.corpus.shards import load_images
    from pipeline.evaluate import per_class_arrow, predict, run_metrics
    from pipeline.train import build_learner, pick_device

    corpus_dir = ws.artifact("corpus", plan.corpus_key).path

    def build(out: Path) -> dict:
        state = torch.load(ws.artifact("train", run.train_key).path / "model.pt", map_location="cpu", weights_only=False)
        class_ids, counts = state["class_ids"], state["class_counts"]
        device = pick_device(plan.spec.train.device)
        names = {c.concept_id: c.name for c in plan.vocab.concepts}
        class_names = [names[c] for c in class_ids]
        learner = build_learner(run.model, plan.spec.train, counts, class_names)
        learner.load_state_dict(state["model"])
        learner.to(device)
        evalset = pq.read_table(corpus_dir / "eval.parquet").to_pandas()
        evalset = evalset[evalset.concept_id.isin(class_ids)].reset_index(drop=True)
        images = load_images([corpus_dir / "shards" / s for s in sorted(evalset.shard.unique())], set(evalset.key),
                             plan.spec.corpus.image_size)
        x = torch.from_numpy(np.stack([images[k] for k in evalset.key]))
        index_of = {cid: i for i, cid in enumerate(class_ids)}
        y_true = evalset.concept_id.map(index_of).to_numpy()
        logits, feats = predict(learner, x, class_names, plan.spec.eval.prompts, device)
        trimmed = ws.artifact("curate", run.subset_key).manifest()["achieved"].get("trimmed_classes", [])
        per_class, metrics = run_metrics(logits, feats, y_true, np.asarray(counts),
                                         [index_of[c] for c in trimmed if c in index_of])
        write_parquet(per_class_arrow(run.eval_key, class_ids, class_names, per_class), out / "per_class.parquet")
        write_parquet(pa.Table.from_pylist([{"run_id": run.eval_key, "model": run.model, "seed": run.seed,
                                             "train_key": run.train_key, **metrics}]), out / "metrics.parquet")
        return {"rows": {"eval": int(len(y_true))}, "metrics": metrics}

    return run_stage(ws, "evaluate", run.eval_key, {"train": run.train_key, "eval": plan.spec.eval.model_dump()},
                     build, force, label=f"{cell_id(run.cell)}/{run.model}/s{run.seed}")


def collect_results(ws: Workspace, plan: StudyPlan):
    """-> (run_metrics, per_class) DataFrames of the plan's runs, labelled by factor level."""
    import pandas as pd

    metrics, per_class = [], []
    for r in plan.runs:
        art = ws.artifact("evaluate", r.eval_key).path
        labels = {"factor": r.cell.factor, "level": r.cell.level, "cell": cell_id(r.cell), "model": r.model,
                  "seed": r.seed}
        metrics.append({**pq.read_table(art / "metrics.parquet").to_pylist()[0], **labels})
        per_class.append(pq.read_table(art / "per_class.parquet").to_pandas().assign(**labels))
    return pd.DataFrame(metrics), pd.concat(per_class, ignore_index=True)


def build_report(ws: Workspace, plan: StudyPlan, force: bool = False) -> StageResult:
    from pipeline.report import write_report

    def build(out: Path) -> dict:
        run_metrics, per_class = collect_results(ws, plan)
        corpus_stats = ws.artifact("frequency", plan.frequency_key).manifest()["imbalance"]
        freq_dir = ws.artifact("frequency", plan.frequency_key).path
        written = write_report(plan.spec.name, run_metrics, per_class, corpus_stats, out,
                               freq_dir / "rank_frequency.png")
        return {"rows": {"runs": len(run_metrics)}, **written}

    return run_stage(ws, "report", plan.report_key, {"study": plan.spec.name, "runs": len(plan.runs)}, build, force,
                     label=plan.spec.name)


# ---------------------------------------------------------------- study records (what the catalog's views join on)

def runs_table(plan: StudyPlan, statuses: dict[str, str]) -> pa.Table:
    return pa.Table.from_pylist([
        {"run_id": r.eval_key, "study": plan.spec.name, "factor": r.cell.factor, "level": r.cell.level,
         "model": r.model, "seed": r.seed, "subset_key": r.subset_key, "train_key": r.train_key,
         "status": statuses.get(r.eval_key, "planned")}
        for r in plan.runs
    ])


def study_subsets_table(plan: StudyPlan) -> pa.Table:
    return pa.Table.from_pylist([{"subset_key": plan.subset_keys[cell_id(c)], "study": plan.spec.name,
                                  "factor": c.factor, "level": c.level} for c in plan.cells])


def write_study_records(ws: Workspace, plan: StudyPlan, statuses: dict[str, str]) -> Path:
    """The study's current runs and subsets; rewritten (atomically) on every run of the study."""
    study_dir = ws.root / "studies" / plan.spec.name
    write_parquet(runs_table(plan, statuses), study_dir / "runs.parquet")
    write_parquet(study_subsets_table(plan), study_dir / "subsets.parquet")
    (study_dir / "spec.json").write_text(canonical_json(plan.spec.model_dump(mode="json")))
    return study_dir
