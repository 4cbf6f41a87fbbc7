"""train: one learner, one seed, on one subset -> model.pt + train_log.parquet. Key = the learner, the train options
that can change its result (never the device) and the seed, plus the *content* of the subset it reads: labels only
for supervised learners, labels and captions for CLIP. So levels that differ only in what a learner ignores (e.g.
captions for SL) share one training run."""
from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tailstudy.stages.base import BuildContext, Node, Stage
from tailstudy.store import write_parquet


def train_config(learner: str, cfg, seed: int) -> dict:
    """The slice of the train config that can change this learner's result (device excluded on purpose)."""
    from tailstudy.models import learner_options

    options = cfg.model_dump(mode="json")
    # "model": the learner under its old name, kept: train keys hash this dict (keys are a promise)
    return {"model": learner, "train": {k: options[k] for k in learner_options(learner)}, "seed": seed}


def load_subset_data(corpus_dir: Path, subset_dir: Path):
    """Subset manifest -> a training set streamed from the corpus's shards (tailstudy.data), class ids and counts."""
    from tailstudy.data import ShardData, subset_index

    freq = pq.read_table(subset_dir / "subset_freq.parquet").sort_by("concept_id")
    class_ids = freq.column("concept_id").to_pylist()
    return ShardData(subset_index(corpus_dir, subset_dir, class_ids)), class_ids, freq.column("count").to_pylist()


def uses_gpu(device: str) -> bool:
    if device == "cpu":
        return False
    import torch

    return device.startswith("cuda") or torch.cuda.is_available()


def train_spec(ctx: BuildContext):
    """The spec's train options, on the device the executor pinned this node to (if it did)."""
    cfg = ctx.config["spec"].train
    return cfg if ctx.device is None else cfg.model_copy(update={"device": ctx.device})


class TrainStage(Stage):
    name = "train"
    reads_upstream = True

    @property
    def VERSION(self) -> int:  # noqa: N802 - tailstudy.train imports torch; read it only when keying
        from tailstudy.train import TRAIN_VERSION

        return TRAIN_VERSION

    def key_config(self, config: dict) -> dict:
        return train_config(config["learner"], config["spec"].train, config["seed"])

    def upstream_keys(self, node: Node, ws) -> dict[str, str]:
        from tailstudy.models import reads_captions

        digests = ws.artifact("curate", node.upstream["curate"].key).manifest()["digests"]
        return {"subset_content": digests["labels_captions" if reads_captions(node.config["learner"]) else "labels"]}

    def inputs(self, node: Node) -> dict:
        return {"subset": node.upstream["curate"].key, **self.key_config(node.config)}

    def resources(self, node: Node) -> dict[str, int]:
        return {"gpu": 1} if uses_gpu(node.config["spec"].train.device) else {"train": 1}

    def build(self, ctx: BuildContext, out: Path) -> dict:
        import torch

        from tailstudy.integrity import discard_unreadable
        from tailstudy.locks import stderr_say
        from tailstudy.train import CHECKPOINT, release_memory, train

        started = time.time()
        spec, learner_name, seed = ctx.config["spec"], ctx.config["learner"], ctx.config["seed"]
        data, class_ids, counts = load_subset_data(ctx.path("corpus"), ctx.path("curate"))
        names = {c.concept_id: c.name for c in ctx.config["vocab"].concepts}
        work = ctx.ws.scratch_dir("train", ctx.node.key, fresh=ctx.force)  # --force train never resumes
        discard_unreadable(work / CHECKPOINT, lambda p: torch.load(p, map_location="cpu", weights_only=False),
                           stderr_say)  # a corrupt checkpoint restarts training instead of failing every run
        release_memory()  # memory earlier stages freed (other threads' malloc arenas too) is not kept beside the peak
        learner, log = train(learner_name, data, counts, train_spec(ctx), seed, work, ctx.progress,
                             [names[c] for c in class_ids])
        torch.save({"model": learner.state_dict(), "class_ids": class_ids, "class_counts": counts}, out / "model.pt")
        write_parquet(pa.Table.from_pylist(log), out / "train_log.parquet")
        if hasattr(learner, "export_open_clip"):  # CLIP runs: a checkpoint open_clip loads by itself
            learner.export_open_clip(out)
        del learner
        release_memory()  # the next stage in this process (evaluate) starts without this run's model and heap
        return {"rows": {"train_samples": int(data.num_samples)}, "model": learner_name, "learner": learner_name,
                "seed": seed, "class_ids": class_ids, "class_counts": counts, "final_loss": log[-1]["loss"],
                "train_config": self.key_config(ctx.config), "started_at": started, "finished_at": time.time(),
                "device": str(ctx.device or spec.train.device)}


def run_label(cell_label: str, learner: str, seed: int) -> str:
    return f"{cell_label}/{learner}/s{seed}"


def train_node(spec, learner: str, seed: int, curate: Node, corpus: Node) -> Node:
    return Node("train", {"spec": spec, "learner": learner, "seed": seed, "vocab": curate.config["vocab"]},
                {"curate": curate, "corpus": corpus}, label=run_label(curate.label, learner, seed))
