"""train: one learner, one seed, on one subset -> model.pt + train_log.parquet (tailstudy.runs). Key = the learner, the
train options that can change its result (never the device) and the seed, plus the *content* of the subset it reads:
labels only for supervised learners, labels and captions for CLIP. So levels that differ only in what a learner
ignores (e.g. captions for SL) share one training run."""
from __future__ import annotations

from pathlib import Path

from tailstudy.models import COMMON_OPTIONS, learner_options, reads_captions
from tailstudy.progress import epoch_bar
from tailstudy.spec import LearnerRun
from tailstudy.stages.base import BuildContext, Node, Stage
from tailstudy.store import canonical_json

# 4: AdamW as open_clip sets it up (no decay on gains, biases, logit scales: `decays`), weight decay 0.2 by default,
# sampled vocabularies drawn by frequency (`linear`) by default, frozen heads (text_head) (issue 22); one batch path
# (issue 24): open_clip's transforms applied per image in a DataLoader, so input batches are contiguous NCHW (the
# replica path handed the model channels-last views: other kernels, other roundings), same items and crops; the key
# names the learner "learner" (was "model").
# 3: streamed from shards, open_clip transforms (augmentation), max_steps; 2: logit scales init 1/0.07, capped at 100
TRAIN_VERSION = 4


def train_config(learner: str, cfg, seed: int) -> dict:
    """The slice of the train config that can change this learner's result (device excluded on purpose)."""
    options = cfg.model_dump(mode="json")
    return {"learner": learner, "train": {k: options[k] for k in learner_options(learner)}, "seed": seed}


def uses_gpu(device: str, gpus: int) -> bool:
    """Whether a run on `device` ("auto": a GPU where this machine has one, of `gpus`) takes a GPU."""
    return device.startswith("cuda") or (device == "auto" and gpus > 0)


class TrainStage(Stage):
    name = "train"
    VERSION = TRAIN_VERSION
    reads_upstream = True
    uses_torch_rng = True  # seeded once, then drawn from at every step: nothing else in its process may draw
    isolated = True  # a process of its own when runs overlap (tailstudy.flows.torchrun), or N of them under DDP
    dispatchable = True  # or a child flow run on a GPU work pool

    def key_config(self, config: dict) -> dict:
        run = config["run"]  # a learner variant with the same learner and options shares the plain learner's runs
        return train_config(run.learner, run.train, config["seed"])

    def upstream_keys(self, node: Node, ws) -> dict[str, str]:
        digests = ws.artifact("curate", node.upstream["curate"].key).manifest()["digests"]
        read = "labels_captions" if reads_captions(node.config["run"].learner) else "labels"
        keys = {"subset_content": digests[read]}
        if "teacher" in node.upstream:  # a frozen head made from another run's text tower
            keys["teacher"] = node.upstream["teacher"].key
        return keys

    def inputs(self, node: Node) -> dict:
        return {"subset": node.upstream["curate"].key, **self.key_config(node.config)}

    def resources(self, node: Node, gpus: int = 0) -> dict[str, int]:
        return {"gpu": 1} if uses_gpu(node.config["run"].train.device, gpus) else {"parallel": 1}

    def work(self, node: Node, ws) -> float:
        """Samples seen over the run, twice for a learner that reads captions (its text tower about doubles a step:
        171 s against 91 s a run in the default study); the subset's size is in its manifest, built before the run
        is ready."""
        achieved = ws.artifact("curate", node.upstream["curate"].key).manifest().get("achieved", {})
        train, text = node.config["run"].train, reads_captions(node.config["run"].learner)
        samples = achieved.get("total", 0) + (achieved.get("open_world_samples", 0) if text else 0)
        steps = max(1, -(-samples // train.batch_size)) * train.epochs
        return min(steps, train.max_steps or steps) * train.batch_size * (2 if text else 1)

    def progress(self, node: Node):
        return epoch_bar(f"train {node.label}", node.config["run"].train.epochs)

    def build(self, ctx: BuildContext, out: Path) -> dict:
        from tailstudy.runs import train_artifact  # torch + open_clip (seconds): paid by a run, never by planning

        return {**train_artifact(ctx, out), "train_config": self.key_config(ctx.config)}


def learner_labels(run) -> dict[str, str]:
    """A run's registered learner (`kind`) and the train options it declares (`options`, JSON): what the claims need
    to tell learner variants apart (e.g. the sampled-vocabulary size, the head)."""
    options = run.train.model_dump(mode="json")
    return {"kind": run.learner,
            "options": canonical_json({k: options[k] for k in learner_options(run.learner) if k not in COMMON_OPTIONS})}


def run_label(cell_label: str, learner: str, seed: int) -> str:
    return f"{cell_label}/{learner}/s{seed}"


TEACHER_SEED_OFFSET = 1000  # a teacher CLIP's seed: seed + this, never one of the study's own runs


def train_node(spec, run, seed: int, curate: Node, corpus: Node, teacher_curate: Node | None = None) -> Node:
    """One training run of learner `run` (a `tailstudy.spec.LearnerRun`). A learner whose frozen head is made of a
    CLIP text tower (`text_head: clip`) gets a teacher: the study's plain CLIP trained on `teacher_curate` (the base
    subset) with another seed, so the head's language was learned from this world's captions, not from this run."""
    upstream = {"curate": curate, "corpus": corpus}
    if getattr(run.train, "text_head", None) == "clip" and uses_text_head(run.learner, run.train):
        teacher = LearnerRun("clip", "clip", spec.train)
        upstream["teacher"] = train_node(spec, teacher, seed + TEACHER_SEED_OFFSET, teacher_curate or curate, corpus)
    return Node("train", {"spec": spec, "learner": run.name, "run": run, "seed": seed, "vocab": curate.config["vocab"]},
                upstream, label=run_label(curate.label, run.name, seed))


def uses_text_head(learner: str, train) -> bool:
    """Whether `learner` with these options has a frozen text head (its own, or `head: frozen_text`)."""
    options = learner_options(learner)
    return "text_head" in options and ("head" not in options or train.head == "frozen_text")
