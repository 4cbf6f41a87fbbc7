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
from tailstudy.store import canonical_json, write_parquet


def train_config(learner: str, cfg, seed: int) -> dict:
    """The slice of the train config that can change this learner's result (device excluded on purpose)."""
    from tailstudy.models import learner_options

    options = cfg.model_dump(mode="json")
    # "model": the learner under its old name, kept: train keys hash this dict (keys are a promise)
    return {"model": learner, "train": {k: options[k] for k in learner_options(learner)}, "seed": seed}


def load_subset_data(corpus_dir: Path, subset_dir: Path):
    """Subset manifest -> a training set streamed from the corpus's shards (tailstudy.data), class ids and counts."""
    from tailstudy.data import ShardData
    from tailstudy.items import subset_index

    freq = pq.read_table(subset_dir / "subset_freq.parquet").sort_by("concept_id")
    class_ids = freq.column("concept_id").to_pylist()
    return ShardData(subset_index(corpus_dir, subset_dir, class_ids)), class_ids, freq.column("count").to_pylist()


def uses_gpu(device: str) -> bool:
    if device == "cpu":
        return False
    import torch

    return device.startswith("cuda") or torch.cuda.is_available()


def train_spec(ctx: BuildContext):
    """The run's train options (the study's, with its learner's own values), on the device the executor pinned this
    node to (if it did)."""
    cfg = ctx.config["run"].train
    return cfg if ctx.device is None else cfg.model_copy(update={"device": ctx.device})


class TrainStage(Stage):
    name = "train"
    reads_upstream = True

    @property
    def VERSION(self) -> int:  # noqa: N802 - tailstudy.train imports torch; read it only when keying
        from tailstudy.train import TRAIN_VERSION

        return TRAIN_VERSION

    def key_config(self, config: dict) -> dict:
        run = config["run"]  # a learner variant with the same learner and options shares the plain learner's runs
        return train_config(run.learner, run.train, config["seed"])

    def upstream_keys(self, node: Node, ws) -> dict[str, str]:
        from tailstudy.models import reads_captions

        digests = ws.artifact("curate", node.upstream["curate"].key).manifest()["digests"]
        keys = {"subset_content": digests["labels_captions" if reads_captions(node.config["run"].learner) else "labels"]}
        if "teacher" in node.upstream:  # a frozen head made from another run's text tower
            keys["teacher"] = node.upstream["teacher"].key
        return keys

    def inputs(self, node: Node) -> dict:
        return {"subset": node.upstream["curate"].key, **self.key_config(node.config)}

    def resources(self, node: Node) -> dict[str, int]:
        return {"gpu": 1} if uses_gpu(node.config["run"].train.device) else {"train": 1}

    def build(self, ctx: BuildContext, out: Path) -> dict:
        import torch

        from tailstudy.integrity import discard_unreadable
        from tailstudy.locks import stderr_say
        from tailstudy.train import CHECKPOINT, release_memory, train

        started = time.time()
        run, seed = ctx.config["run"], ctx.config["seed"]
        learner_name = run.learner
        data, class_ids, counts = load_subset_data(ctx.path("corpus"), ctx.path("curate"))
        names = {c.concept_id: c.name for c in ctx.config["vocab"].concepts}
        class_names = [names[c] for c in class_ids]
        head = teacher_embeddings(ctx, class_names) if "teacher" in ctx.node.upstream else None
        work = ctx.ws.scratch_dir("train", ctx.node.key, fresh=ctx.force)  # --force train never resumes
        discard_unreadable(work / CHECKPOINT, lambda p: torch.load(p, map_location="cpu", weights_only=False),
                           stderr_say)  # a corrupt checkpoint restarts training instead of failing every run
        release_memory()  # memory earlier stages freed (other threads' malloc arenas too) is not kept beside the peak
        learner, log = train(learner_name, data, counts, train_spec(ctx), seed, work, ctx.progress, class_names, head)
        torch.save({"model": learner.state_dict(), "class_ids": class_ids, "class_counts": counts,
                    "head_embeddings": head}, out / "model.pt")
        write_parquet(pa.Table.from_pylist(log), out / "train_log.parquet")
        if hasattr(learner, "export_open_clip"):  # CLIP runs: a checkpoint open_clip loads by itself
            learner.export_open_clip(out)
        del learner
        release_memory()  # the next stage in this process (evaluate) starts without this run's model and heap
        return {"rows": {"train_samples": int(data.num_samples)}, "model": learner_name, "learner": run.name,
                "seed": seed, "class_ids": class_ids, "class_counts": counts, "final_loss": log[-1]["loss"],
                "train_config": self.key_config(ctx.config), "started_at": started, "finished_at": time.time(),
                "device": str(ctx.device or run.train.device),
                "threads": torch.get_num_threads()}  # CPU results depend on it in the last bits (train.threads)


def learner_labels(run) -> dict[str, str]:
    """A run's registered learner (`kind`) and the train options it declares (`options`, JSON): what the claims need
    to tell learner variants apart (e.g. the sampled-vocabulary size, the head)."""
    from tailstudy.models import COMMON_OPTIONS, learner_options

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
    from tailstudy.spec import LearnerRun

    upstream = {"curate": curate, "corpus": corpus}
    if getattr(run.train, "text_head", None) == "clip" and uses_text_head(run.learner, run.train):
        teacher = LearnerRun("clip", "clip", spec.train)
        upstream["teacher"] = train_node(spec, teacher, seed + TEACHER_SEED_OFFSET, teacher_curate or curate, corpus)
    return Node("train", {"spec": spec, "learner": run.name, "run": run, "seed": seed, "vocab": curate.config["vocab"]},
                upstream, label=run_label(curate.label, run.name, seed))


def uses_text_head(learner: str, train) -> bool:
    """Whether `learner` with these options has a frozen text head (its own, or `head: frozen_text`)."""
    from tailstudy.models import learner_options

    options = learner_options(learner)
    return "text_head" in options and ("head" not in options or train.head == "frozen_text")


def teacher_embeddings(ctx: BuildContext, class_names: list[str]):
    """Class embeddings from the teacher CLIP's text tower: the study's evaluation prompts, averaged per class."""
    import torch

    from tailstudy.evaluate import encode_class_names
    from tailstudy.train import build_learner

    teacher_dir = ctx.path("teacher")
    state = torch.load(teacher_dir / "model.pt", map_location="cpu", weights_only=False)
    clip = build_learner("clip", ctx.config["spec"].train, state["class_counts"])
    clip.load_state_dict(state["model"])
    return encode_class_names(clip, class_names, ctx.config["spec"].evaluate.prompts).detach().cpu()
