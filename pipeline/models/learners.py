"""CLIP (open_clip) and supervised learners sharing one image tower."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import register

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@lru_cache(maxsize=None)
def _register_configs() -> None:
    open_clip.add_model_config(CONFIG_DIR)


def create_clip(arch: str) -> nn.Module:
    _register_configs()
    if arch not in open_clip.list_models():
        raise ValueError(f"train.arch: unknown model config {arch!r}")
    return open_clip.create_model(arch, pretrained=None, output_dict=True)


def image_size_of(arch: str) -> int:
    _register_configs()
    size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
    return size if isinstance(size, int) else size[0]


class Learner(nn.Module):
    """Common interface. Batches are dicts: images (B,3,H,W float), labels (B, class index or -1), tokens."""

    name = "learner"
    uses_text = False  # needs tokenised captions
    uses_unlabeled = False  # can learn from open-world (label-less) samples

    def loss(self, batch: dict, step_rng: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def class_logits(self, images: torch.Tensor, prompts: list[list[str]] | None) -> torch.Tensor:
        raise NotImplementedError


@register("clip")
class ClipLearner(Learner):
    uses_text = True
    uses_unlabeled = True

    def __init__(self, arch: str, num_classes: int, class_counts=None, **_):
        super().__init__()
        self.model = create_clip(arch)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.loss_fn = open_clip.ClipLoss()

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    def loss(self, batch, step_rng):
        out = self.model(batch["images"], batch["tokens"])
        return self.loss_fn(out["image_features"], out["text_features"], out["logit_scale"])

    def image_features(self, images):
        return self.model.encode_image(images)

    @torch.no_grad()
    def class_text_features(self, prompts: list[list[str]]) -> torch.Tensor:
        """One embedding per class: the normalised mean of its prompt embeddings."""
        device = next(self.parameters()).device
        feats = []
        for class_prompts in prompts:
            emb = F.normalize(self.model.encode_text(self.tokenize(class_prompts).to(device)), dim=-1)
            feats.append(F.normalize(emb.mean(0), dim=-1))
        return torch.stack(feats)

    def class_logits(self, images, prompts):
        text = self.class_text_features(prompts)
        return F.normalize(self.image_features(images), dim=-1) @ text.T


@register("sl")
class SupervisedLearner(Learner):
    """The CLIP image tower with a linear head over the target classes, trained with cross-entropy."""

    def __init__(self, arch: str, num_classes: int, class_counts=None, **_):
        super().__init__()
        self.visual = create_clip(arch).visual
        embed_dim = self.visual.output_dim
        self.head = nn.Linear(embed_dim, num_classes)
        self.num_classes = num_classes

    def image_features(self, images):
        return self.visual(images)

    def loss(self, batch, step_rng):
        return F.cross_entropy(self.head(self.image_features(batch["images"])), batch["labels"])

    def class_logits(self, images, prompts=None):
        return self.head(self.image_features(images))


def sample_vocabulary(labels: torch.Tensor, num_classes: int, num_to_sample: int, weights: torch.Tensor,
                      rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step vocabulary: every class present in the batch, plus absent classes drawn without replacement
    (probability ∝ weights) until the vocabulary holds `num_to_sample` classes. -> (vocab class ids, remapped targets)."""
    present = torch.unique(labels)
    w = weights.clone().double()
    w[present] = 0
    # never more extras than absent classes with positive weight (a zero-weight class is never drawn)
    n_extra = min(max(0, min(num_to_sample, num_classes) - len(present)), int((w > 0).sum()))
    if n_extra:
        extra = torch.multinomial(w, n_extra, replacement=False, generator=rng)
        vocab = torch.cat([present, extra.to(present.dtype)])
    else:
        vocab = present
    lookup = torch.full((num_classes,), -1, dtype=torch.long)
    lookup[vocab] = torch.arange(len(vocab))
    return vocab, lookup[labels]


@register("sl_sampled_vocab")
class SampledVocabLearner(SupervisedLearner):
    """SL whose softmax at each step covers only a sampled vocabulary (the paper's dynamic-classification remedy)."""

    def __init__(self, arch: str, num_classes: int, class_counts=None, num_to_sample: int = 16,
                 vocab_weights: str = "uniform", **_):
        super().__init__(arch, num_classes)
        counts = torch.as_tensor(class_counts if class_counts is not None else [1] * num_classes, dtype=torch.float64)
        self.num_to_sample = num_to_sample
        self.register_buffer("vocab_weights", {"uniform": torch.ones_like(counts), "linear": counts,
                                               "sqrt": counts.sqrt()}[vocab_weights], persistent=False)

    def loss(self, batch, step_rng):
        labels = batch["labels"]
        vocab, targets = sample_vocabulary(labels.cpu(), self.num_classes, self.num_to_sample,
                                           self.vocab_weights.cpu(), step_rng)
        vocab, targets = vocab.to(labels.device), targets.to(labels.device)
        features = self.image_features(batch["images"])
        logits = F.linear(features, self.head.weight[vocab], self.head.bias[vocab])
        return F.cross_entropy(logits, targets)
