"""The torch side of the train and evaluate stages: one training run's artifact (model.pt, train_log.parquet, the
open_clip export of a CLIP) and one evaluation's (per_class.parquet, metrics.parquet), built from the stage's context.

What a run is (its key, its resources, its node in the study graph) is declared in pipeline/stages/train.py and
evaluate.py, which every command imports; this module imports torch and open_clip, so it is loaded by a stage that
trains or evaluates, never by one that only plans or matches."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tailstudy.data import ShardData
from tailstudy.data_eval import stream_predictor
from tailstudy.evaluate import encode_class_names, evaluate_learner, evaluation_classes, json_metrics, metrics_arrow, \
    per_class_arrow
from tailstudy.integrity import discard_unreadable
from tailstudy.items import eval_index, subset_index, target_concepts
from tailstudy.locks import stderr_say
from tailstudy.store import write_parquet
from tailstudy.train import CHECKPOINT, build_learner, pick_device, release_memory, train


def train_spec(ctx):
    """The run's train options (the study's, with its learner's own values), on the device the executor pinned this
    node to (if it did)."""
    cfg = ctx.config["run"].train
    return cfg if ctx.device is None else cfg.model_copy(update={"device": ctx.device})


def load_subset_data(corpus_dir: Path, subset_dir: Path):
    """Subset manifest -> a training set streamed from the corpus's shards (tailstudy.data), class ids and counts."""
    freq = pq.read_table(subset_dir / "subset_freq.parquet").sort_by("concept_id")
    class_ids = freq.column("concept_id").to_pylist()
    return ShardData(subset_index(corpus_dir, subset_dir, class_ids)), class_ids, freq.column("count").to_pylist()


def teacher_embeddings(ctx, class_names: list[str]) -> torch.Tensor:
    """Class embeddings from the teacher CLIP's text tower: the study's evaluation prompts, averaged per class."""
    state = torch.load(ctx.path("teacher") / "model.pt", map_location="cpu", weights_only=False)
    clip = build_learner("clip", ctx.config["spec"].train, state["class_counts"])
    clip.load_state_dict(state["model"])
    return encode_class_names(clip, class_names, ctx.config["spec"].evaluate.prompts).detach().cpu()


def train_artifact(ctx, out: Path) -> dict:
    """One learner, one seed, on one subset -> model.pt, train_log.parquet (and a CLIP's open_clip export) in `out`;
    -> the manifest's entries. Resumes from the run's checkpoint unless forced."""
    started = time.time()
    run, seed = ctx.config["run"], ctx.config["seed"]
    data, class_ids, counts = load_subset_data(ctx.path("corpus"), ctx.path("curate"))
    names = {c.concept_id: c.name for c in ctx.config["vocab"].concepts}
    class_names = [names[c] for c in class_ids]
    head = teacher_embeddings(ctx, class_names) if "teacher" in ctx.node.upstream else None
    work = ctx.ws.scratch_dir("train", ctx.node.key, fresh=ctx.force)  # --force train never resumes
    discard_unreadable(work / CHECKPOINT, lambda p: torch.load(p, map_location="cpu", weights_only=False),
                       stderr_say)  # a corrupt checkpoint restarts training instead of failing every run
    release_memory()  # memory earlier stages freed (other threads' malloc arenas too) is not kept beside the peak
    learner, log = train(run.learner, data, counts, train_spec(ctx), seed, work, ctx.progress, class_names, head)
    torch.save({"model": learner.state_dict(), "class_ids": class_ids, "class_counts": counts,
                "head_embeddings": head}, out / "model.pt")
    write_parquet(pa.Table.from_pylist(log), out / "train_log.parquet")
    if hasattr(learner, "export_open_clip"):  # CLIP runs: a checkpoint open_clip loads by itself
        learner.export_open_clip(out)
    del learner
    release_memory()  # the next stage in this process (evaluate) starts without this run's model and heap
    # "kind": the registered learner, "learner": the study's name for it (as runs.parquet names them)
    return {"rows": {"train_samples": int(data.num_samples)}, "kind": run.learner, "learner": run.name,
            "seed": seed, "class_ids": class_ids, "class_counts": counts, "final_loss": log[-1]["loss"],
            "started_at": started, "finished_at": time.time(), "device": str(ctx.device or run.train.device),
            "threads": torch.get_num_threads()}  # CPU results depend on it in the last bits (train.threads)


def evaluate_artifact(ctx, out: Path, caption_prompt: str | None) -> dict:
    """One trained learner on the study's evaluation classes -> per_class.parquet and metrics.parquet in `out`;
    -> the manifest's entries. `caption_prompt`: the prompt its level's captions use (zero-shot learners), or None."""
    spec, run, run_id = ctx.config["spec"], ctx.config["run"], ctx.node.key
    state = torch.load(ctx.path("train") / "model.pt", map_location="cpu", weights_only=False)
    class_ids, counts = state["class_ids"], state["class_counts"]
    device = pick_device(train_spec(ctx).device)
    names = {c.concept_id: c.name for c in ctx.config["vocab"].concepts}
    learner = build_learner(run.learner, run.train, counts, [names[c] for c in class_ids],
                            state.get("head_embeddings"))
    learner.load_state_dict(state["model"])
    learner.to(device)
    eval_ids = evaluation_classes(target_concepts(ctx.path("corpus")), spec.evaluate.classes, names)
    index = eval_index(ctx.path("corpus"), eval_ids)
    concepts = np.asarray(eval_ids)[index.label]
    freq = pq.read_table(ctx.path("frequency") / "concept_freq.parquet")
    corpus_freq = dict(zip(freq.column("concept_id").to_pylist(), freq.column("count").to_pylist()))
    trimmed = ctx.artifact("curate").manifest()["achieved"].get("trimmed_classes", [])
    per_class, metrics = evaluate_learner(learner, index, concepts, eval_ids, class_ids, counts, corpus_freq, names,
                                          spec.evaluate.prompts, device, trimmed,
                                          stream_predictor(run.train.batch_size, run.train.workers), caption_prompt)
    del learner, state
    release_memory()
    write_parquet(per_class_arrow(run_id, eval_ids, [names[c] for c in eval_ids], per_class), out / "per_class.parquet")
    # "kind": the registered learner, as runs.parquet names it (variants with equal options share this file)
    write_parquet(metrics_arrow({"run_id": run_id, "kind": run.learner, "seed": ctx.config["seed"],
                                 "train_key": ctx.node.upstream["train"].key}, metrics), out / "metrics.parquet")
    return {"rows": {"eval": int(len(concepts))}, "metrics": json_metrics(metrics)}
