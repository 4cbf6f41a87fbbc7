"""evaluate: one trained learner on the study's fixed evaluation classes (evaluate.classes) -> per_class.parquet and
metrics.parquet (top-1, rho against the subset's and the corpus's frequency, head/tail accuracy, per-class neural
collapse, ...; rules in tailstudy.evaluate, the artifact in tailstudy.runs). Key = the eval options + the train,
corpus and frequency keys; it is the run's `run_id`."""
from __future__ import annotations

from pathlib import Path

from tailstudy.models import known_learners
from tailstudy.stages.base import BuildContext, Node, Stage
from tailstudy.stages.train import uses_gpu
from tailstudy.variants import caption_prompt

# 4: CLIP also scored with its captions' own prompt (top1_caption_prompt); metrics.parquet names the registered learner
# `kind` (was `model`). 3: fixed eval class list, rho vs corpus frequency, per-class NC, NaN -> null
EVALUATE_VERSION = 4


def own_caption_prompt(config: dict) -> str | None:
    """The caption prompt of the run's level (tailstudy.variants.caption_prompt) for a zero-shot learner, else None."""
    if not getattr(known_learners()[config["run"].learner], "zero_shot", False):
        return None
    subset = config["cell"].subset
    return caption_prompt(subset.caption, subset.name_prefix)


class EvaluateStage(Stage):
    name = "evaluate"
    VERSION = EVALUATE_VERSION
    key_roles = ("train", "corpus", "frequency")
    uses_torch_rng = True  # it builds a model (initialised from torch's RNG) before loading the trained weights

    def key_config(self, config: dict) -> dict:
        # "eval": the section's old name, kept in keys and manifests (keys are a promise). A zero-shot learner is also
        # scored with its level's caption prompt; supervised runs shared by caption levels keep one evaluation.
        key = {"eval": config["spec"].evaluate.model_dump(mode="json")}
        prompt = own_caption_prompt(config)
        return key if prompt is None else {**key, "caption_prompt": prompt}

    def inputs(self, node: Node) -> dict:
        return {"train": node.upstream["train"].key, "eval": node.config["spec"].evaluate.model_dump()}

    def resources(self, node: Node, gpus: int = 0) -> dict[str, int]:
        return {"gpu": 1} if uses_gpu(node.config["run"].train.device, gpus) else {"cpu": 1}

    def build(self, ctx: BuildContext, out: Path) -> dict:
        from tailstudy.runs import evaluate_artifact  # torch + open_clip (seconds): paid by a run, never by planning

        return evaluate_artifact(ctx, out, own_caption_prompt(ctx.config))


def evaluate_node(train: Node, cell, frequency: Node) -> Node:
    config = {k: train.config[k] for k in ("spec", "learner", "run", "seed", "vocab")}
    return Node("evaluate", {**config, "cell": cell},
                {"train": train, "corpus": train.upstream["corpus"], "curate": train.upstream["curate"],
                 "frequency": frequency},
                label=train.label)
