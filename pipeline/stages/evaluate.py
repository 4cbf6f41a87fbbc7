"""evaluate: one trained learner on the study's fixed evaluation classes (evaluate.classes) -> per_class.parquet and
metrics.parquet (top-1, rho against the subset's and the corpus's frequency, head/tail accuracy, per-class neural
collapse, ...; rules in tailstudy.evaluate). Key = the eval options + the train, corpus and frequency keys; it is the
run's `run_id`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tailstudy.stages.base import BuildContext, Node, Stage
from tailstudy.stages.curate import target_concepts
from tailstudy.stages.train import train_spec, uses_gpu
from tailstudy.store import write_parquet


class EvaluateStage(Stage):
    name = "evaluate"
    key_roles = ("train", "corpus", "frequency")

    @property
    def VERSION(self) -> int:  # noqa: N802
        from tailstudy.evaluate import EVALUATE_VERSION

        return EVALUATE_VERSION

    def key_config(self, config: dict) -> dict:
        # "eval": the section's old name, kept in keys and manifests (keys are a promise)
        return {"eval": config["spec"].evaluate.model_dump(mode="json")}

    def inputs(self, node: Node) -> dict:
        return {"train": node.upstream["train"].key, "eval": node.config["spec"].evaluate.model_dump()}

    def resources(self, node: Node) -> dict[str, int]:
        return {"gpu": 1} if uses_gpu(node.config["spec"].train.device) else {"cpu": 1}

    def build(self, ctx: BuildContext, out: Path) -> dict:
        import torch

        from tailstudy.data import eval_index
        from tailstudy.data_eval import stream_predictor
        from tailstudy.evaluate import evaluate_learner, evaluation_classes, json_metrics, metrics_arrow, per_class_arrow
        from tailstudy.train import build_learner, pick_device, release_memory

        spec, learner_name, run_id = ctx.config["spec"], ctx.config["learner"], ctx.node.key
        state = torch.load(ctx.path("train") / "model.pt", map_location="cpu", weights_only=False)
        class_ids, counts = state["class_ids"], state["class_counts"]
        device = pick_device(train_spec(ctx).device)
        names = {c.concept_id: c.name for c in ctx.config["vocab"].concepts}
        learner = build_learner(learner_name, spec.train, counts, [names[c] for c in class_ids])
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
                                              stream_predictor(spec.train.batch_size, spec.train.workers))
        del learner, state
        release_memory()
        write_parquet(per_class_arrow(run_id, eval_ids, [names[c] for c in eval_ids], per_class),
                      out / "per_class.parquet")
        # "model" (the learner): metrics.parquet keeps its column, so evaluate outputs stay byte-identical
        write_parquet(metrics_arrow({"run_id": run_id, "model": learner_name, "seed": ctx.config["seed"],
                                     "train_key": ctx.node.upstream["train"].key}, metrics), out / "metrics.parquet")
        return {"rows": {"eval": int(len(concepts))}, "metrics": json_metrics(metrics)}


def evaluate_node(train: Node, cell, frequency: Node) -> Node:
    config = {k: train.config[k] for k in ("spec", "learner", "seed", "vocab")}
    return Node("evaluate", {**config, "cell": cell},
                {"train": train, "corpus": train.upstream["corpus"], "curate": train.upstream["curate"],
                 "frequency": frequency},
                label=train.label)
