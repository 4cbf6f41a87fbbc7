"""Supervised heads over an image tower's features: linear (ours), the paper's cosine prototypes, and frozen heads
(text embeddings of the class names, or fixed random prototypes as their control)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tailstudy.models.towers import sentence_embeddings

# The paper's (and CLIP's) temperature: a learnable logit scale initialised at 1/0.07 and never above 100.
LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = 100.0


def clamped_scale(log_scale: torch.Tensor) -> torch.Tensor:
    """exp(log_scale), capped at LOGIT_SCALE_MAX (open_clip clamps the parameter after each step; capping in the
    forward pass has the same effect on every loss and keeps the rule inside the head)."""
    return log_scale.clamp(max=math.log(LOGIT_SCALE_MAX)).exp()


class LinearHead(nn.Module):
    """Logits over all classes, or over a given subset of them (sampled-vocabulary learners). Ours: a bias can absorb
    the class prior, which the paper's cosine head cannot."""

    def __init__(self, dim: int, num_classes: int, class_names=None):
        super().__init__()
        layer = nn.Linear(dim, num_classes)
        self.weight, self.bias = layer.weight, layer.bias

    def forward(self, features: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        if classes is None:
            return F.linear(features, self.weight, self.bias)
        return F.linear(features, self.weight[classes], self.bias[classes])

    def class_weights(self) -> torch.Tensor:
        return self.weight


class CosineHead(nn.Module):
    """The paper's SL head: cosine similarity to learned class prototypes times a learned scale (init 1/0.07, <= 100)."""

    def __init__(self, dim: int, num_classes: int, class_names=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) / dim ** 0.5)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def forward(self, features, classes=None):
        weight = self.weight if classes is None else self.weight[classes]
        return F.normalize(features, dim=-1) @ F.normalize(weight, dim=-1).T * clamped_scale(self.logit_scale)

    def class_weights(self) -> torch.Tensor:
        return self.weight


class TextHead(nn.Module):
    """The frozen pretrained text head (the paper's Fig. 9): class weights fixed to text embeddings of the class names
    -- given (`embeddings`: e.g. a CLIP text tower trained on this world, `text_head: clip`), else MiniLM embeddings of
    "a {name}" (the packaged all-MiniLM-L6-v2, which knows nothing of this world's images); image features pass
    through a trainable projection into that space; cosine logits with the CLIP scale."""

    def __init__(self, dim: int, num_classes: int, class_names=None, embeddings: torch.Tensor | None = None):
        super().__init__()
        if embeddings is None:
            names = tuple(class_names or [f"class {i}" for i in range(num_classes)])
            embeddings = sentence_embeddings(tuple(f"a {n}" for n in names))
        self.register_buffer("class_embeddings", F.normalize(embeddings.float(), dim=-1))
        self.proj = nn.Linear(dim, self.class_embeddings.shape[1], bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def forward(self, features, classes=None):
        emb = self.class_embeddings if classes is None else self.class_embeddings[classes]
        return F.normalize(self.proj(features), dim=-1) @ emb.T * clamped_scale(self.logit_scale)

    def class_weights(self) -> torch.Tensor:
        return self.class_embeddings


class FrozenRandomHead(TextHead):
    """Ours: the control for the frozen text head -- the same head with fixed random unit prototypes (seeded by the
    run), which are well spread but carry no language, so what a frozen text head adds beyond fixed prototypes shows
    as the difference between the two."""

    def __init__(self, dim: int, num_classes: int, class_names=None, embeddings: torch.Tensor | None = None):
        super().__init__(dim, num_classes, class_names, torch.randn(num_classes, dim) if embeddings is None
                         else embeddings)


FROZEN_HEADS = ("frozen_text", "frozen_random")
HEADS = {"linear": LinearHead, "cosine": CosineHead, "frozen_text": TextHead, "frozen_random": FrozenRandomHead}
