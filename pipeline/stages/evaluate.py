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


def own_caption_prompt(config: dict) -> str | None:
    """The caption prompt of the run's level (`tailstudy.curate.caption_prompt`) for a zero-shot learner, else None."""
    from tailstudy.curate import caption_prompt
    from tailstudy.models import known_learners

    if not getattr(known_learners()[config["run"].learner], "zero_shot", False):
        return None
    subset = config["cell"].subset
    return caption_prompt(subset.caption, subset.name_prefix)


class EvaluateStage(Stage):
    name = "evaluate"
    key_roles = ("train", "corpus", "frequency")

    @property
    def VERSION(self) -> int:  # noqa: N802
        from tailstudy.evaluate import EVALUATE_VERSION

        return EVALUATE_VERSION

    def key_config(self, config: dict) -> dict:
        # "eval": the section's old name, kept in keys and manifests (keys are a promise). A zero-shot learner is also
        # scored with its level's caption prompt; supervised runs shared by caption levels keep one evaluation.
        key = {"eval": config["spec"].evaluate.model_dump(mode="json")}
        prompt = own_caption_prompt(config)
        return key if prompt is None else {**key, "caption_prompt": prompt}

    def inputs(self, node: Node) -> dict:
        return {"train": node.upstream["train"].key, "eval": node.config["spec"].evaluate.model_dump()}

    def resources(self, node: Node) -> dict[str, int]:
        return {"gpu": 1} if uses_gpu(node.config["run"].train.device) else {"cpu": 1}

    def build(self, ctx: BuildContext, out: Path) -> dict:
        import torch

        from tailstudy.data_eval import stream_predictor
        from tailstudy.evaluate import evaluate_learner, evaluation_classes, json_metrics, metrics_arrow, per_class_arrow
        from tailstudy.items import eval_index
        from tailstudy.train import build_learner, pick_device, release_memory

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
                                              stream_predictor(run.train.batch_size, run.train.workers),
                                              own_caption_prompt(ctx.config))
        del learner, state
        release_memory()
        write_parquet(per_class_arrow(run_id, eval_ids, [names[c] for c in eval_ids], per_class),
                      out / "per_class.parquet")
        # "model": the registered learner, not the study's name for it (variants with equal options share this file)
        write_parquet(metrics_arrow({"run_id": run_id, "model": run.learner, "seed": ctx.config["seed"],
                                     "train_key": ctx.node.upstream["train"].key}, metrics), out / "metrics.parquet")
        return {"rows": {"eval": int(len(concepts))}, "metrics": json_metrics(metrics)}


def evaluate_node(train: Node, cell, frequency: Node) -> Node:
    config = {k: train.config[k] for k in ("spec", "learner", "run", "seed", "vocab")}
    return Node("evaluate", {**config, "cell": cell},
                {"train": train, "corpus": train.upstream["corpus"], "curate": train.upstream["curate"],
                 "frequency": frequency},
                label=train.label)
