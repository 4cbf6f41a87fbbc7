"""evaluate: one trained learner on the corpus's evaluation set -> per_class.parquet and metrics.parquet (top-1,
rho between per-class accuracy and training frequency, head/tail accuracy, ...; rules in pipeline.evaluate).
Key = the eval options + the train and corpus keys; its key is the run's `run_id`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.stages.base import BuildContext, Node, Stage
from pipeline.stages.train import train_spec, uses_gpu
from pipeline.store import write_parquet


def _eval_inputs(ctx: BuildContext, class_ids: list[int]):
    """-> (images tensor, class index per image) of the eval set's images of the learner's classes."""
    import torch

    from pipeline.corpus.shards import load_images

    corpus_dir = ctx.path("corpus")
    evalset = pq.read_table(corpus_dir / "eval.parquet").to_pandas()
    evalset = evalset[evalset.concept_id.isin(class_ids)].reset_index(drop=True)
    images = load_images([corpus_dir / "shards" / s for s in sorted(evalset.shard.unique())], set(evalset.key),
                         ctx.config["spec"].corpus.image_size)
    index_of = {cid: i for i, cid in enumerate(class_ids)}
    return torch.from_numpy(np.stack([images[k] for k in evalset.key])), evalset.concept_id.map(index_of).to_numpy()


class EvaluateStage(Stage):
    name = "evaluate"
    key_roles = ("train", "corpus")

    @property
    def VERSION(self) -> int:  # noqa: N802
        from pipeline.evaluate import EVALUATE_VERSION

        return EVALUATE_VERSION

    def key_config(self, config: dict) -> dict:
        return {"eval": config["spec"].eval.model_dump(mode="json")}

    def inputs(self, node: Node) -> dict:
        return {"train": node.upstream["train"].key, "eval": node.config["spec"].eval.model_dump()}

    def resources(self, node: Node) -> dict[str, int]:
        return {"gpu": 1} if uses_gpu(node.config["spec"].train.device) else {"cpu": 1}

    def build(self, ctx: BuildContext, out: Path) -> dict:
        import torch

        from pipeline.evaluate import per_class_arrow, predict, run_metrics
        from pipeline.train import build_learner, pick_device

        spec, learner_name, run_id = ctx.config["spec"], ctx.config["learner"], ctx.node.key
        state = torch.load(ctx.path("train") / "model.pt", map_location="cpu", weights_only=False)
        class_ids, counts = state["class_ids"], state["class_counts"]
        device = pick_device(train_spec(ctx).device)
        names = {c.concept_id: c.name for c in ctx.config["vocab"].concepts}
        class_names = [names[c] for c in class_ids]
        learner = build_learner(learner_name, spec.train, counts, class_names)
        learner.load_state_dict(state["model"])
        learner.to(device)
        x, y_true = _eval_inputs(ctx, class_ids)
        logits, feats = predict(learner, x, class_names, spec.eval.prompts, device)
        index_of = {cid: i for i, cid in enumerate(class_ids)}
        trimmed = ctx.artifact("curate").manifest()["achieved"].get("trimmed_classes", [])
        per_class, metrics = run_metrics(logits, feats, y_true, np.asarray(counts),
                                         [index_of[c] for c in trimmed if c in index_of])
        write_parquet(per_class_arrow(run_id, class_ids, class_names, per_class), out / "per_class.parquet")
        write_parquet(pa.Table.from_pylist([{"run_id": run_id, "model": learner_name, "seed": ctx.config["seed"],
                                             "train_key": ctx.node.upstream["train"].key, **metrics}]),
                      out / "metrics.parquet")
        return {"rows": {"eval": int(len(y_true))}, "metrics": metrics}


def evaluate_node(train: Node, cell) -> Node:
    config = {k: train.config[k] for k in ("spec", "learner", "seed", "vocab")}
    return Node("evaluate", {**config, "cell": cell},
                {"train": train, "corpus": train.upstream["corpus"], "curate": train.upstream["curate"]},
                label=train.label)
