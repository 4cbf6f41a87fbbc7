"""CLIP (open_clip) and supervised learners sharing one image tower."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from tailstudy.models import LEARNERS, learner_options, register
from tailstudy.models.heads import FROZEN_HEADS, HEADS, LOGIT_SCALE_MAX
from tailstudy.models.towers import (OPEN_CLIP_WEIGHTS, clip_model_cfg, clip_tokenizer, create_clip,
                                     write_open_clip_config)
from tailstudy.spec import TrainSpec


class Learner(nn.Module):
    """Common interface. Batches are dicts: images (B,3,H,W float), labels (B, class index or -1), tokens."""

    name = "learner"
    uses_unlabeled = False  # can learn from open-world (label-less) samples
    zero_shot = False  # scores any class by name (CLIP); otherwise only the classes of its head
    reads_captions = False  # its training reads the samples' captions (so its key hashes them)

    def loss(self, batch: dict, step_rng: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: dict, step_rng: torch.Generator) -> torch.Tensor:
        return self.loss(batch, step_rng)

    def distribute(self, rank: int, world: int) -> None:
        """Called before DDP wraps the learner; losses that need every rank's batch set themselves up here."""

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def image_tower(self) -> nn.Module:
        raise NotImplementedError

    def preprocess_cfg(self) -> dict:
        """open_clip's preprocessing of this learner's image tower (size, mean, std, interpolation, resize mode)."""
        return dict(open_clip.get_model_preprocess_cfg(self.image_tower()))

    def encode_classes(self, prompts: list[list[str]]):
        """What class_logits needs about the classes, computed once per evaluation (text embeddings for CLIP)."""
        return None

    def class_logits(self, images: torch.Tensor, classes) -> torch.Tensor:
        raise NotImplementedError

    def classifier_weights(self, classes) -> torch.Tensor:
        """One weight vector per scored class (NC2 on the classifier): the head's rows, or CLIP's class text features."""
        raise NotImplementedError


@register("clip")
class ClipLearner(Learner):
    uses_unlabeled = True
    zero_shot = True
    reads_captions = True

    def __init__(self, arch: str, num_classes: int, class_counts=None, text_tower: str = "scratch"):
        super().__init__()
        self.model = create_clip(arch, text_tower)
        self.model_cfg = clip_model_cfg(arch, text_tower)
        self.tokenizer = clip_tokenizer(arch, text_tower)
        self.loss_fn = open_clip.ClipLoss()

    def export_open_clip(self, out: Path) -> None:
        """`open_clip.create_model_and_transforms("local-dir:OUT")` loads what this writes: {"state_dict": ...} with
        open_clip's key names, and open_clip_config.json (model_cfg + preprocess_cfg)."""
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        tmp = out / f".{OPEN_CLIP_WEIGHTS}.{uuid.uuid4().hex[:8]}"
        torch.save({"state_dict": state}, tmp)
        os.replace(tmp, out / OPEN_CLIP_WEIGHTS)
        write_open_clip_config(out, self.model_cfg, self.preprocess_cfg())


    def distribute(self, rank: int, world: int) -> None:
        # contrast against the whole global batch, not just this rank's share
        self.loss_fn = open_clip.ClipLoss(gather_with_grad=True, rank=rank, world_size=world)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)

    def loss(self, batch, step_rng):
        out = self.model(batch["images"], batch["tokens"])
        # the paper's (open_clip's) temperature rule: the scale never exceeds 100
        return self.loss_fn(out["image_features"], out["text_features"], out["logit_scale"].clamp(max=LOGIT_SCALE_MAX))

    def image_features(self, images):
        return self.model.encode_image(images)

    def image_tower(self):
        return self.model.visual

    @torch.no_grad()
    def class_text_features(self, prompts: list[list[str]], batch_size: int = 1024) -> torch.Tensor:
        """One embedding per class: the normalised mean of its prompt embeddings (prompts encoded in batches)."""
        device = next(self.parameters()).device
        flat = [p for class_prompts in prompts for p in class_prompts]
        emb = torch.cat([F.normalize(self.model.encode_text(self.tokenize(flat[i:i + batch_size]).to(device)), dim=-1)
                         for i in range(0, len(flat), batch_size)])
        owner = torch.repeat_interleave(torch.arange(len(prompts)), torch.tensor([len(p) for p in prompts]))
        sums = torch.zeros(len(prompts), emb.shape[1], device=device).index_add_(0, owner.to(device), emb.float())
        return F.normalize(sums, dim=-1)

    def encode_classes(self, prompts):
        return self.class_text_features(prompts)

    def class_logits(self, images, classes):
        """`classes`: prompts per class, or their embeddings from `encode_classes` (computed once per evaluation)."""
        return self.logits_from_features(self.image_features(images), classes)

    def logits_from_features(self, features: torch.Tensor, classes) -> torch.Tensor:
        """Cosine similarities of image features (`image_features`) to the classes' text embeddings."""
        text = classes if isinstance(classes, torch.Tensor) else self.class_text_features(classes)
        return F.normalize(features, dim=-1) @ text.to(features.dtype).T

    def classifier_weights(self, classes):
        return classes if isinstance(classes, torch.Tensor) else self.class_text_features(classes)


@register("sl")
class SupervisedLearner(Learner):
    """The CLIP image tower with a head over the target classes (the paper's cosine-prototype head by default; ours:
    a linear head with bias; the frozen pretrained text head), cross-entropy."""

    def __init__(self, arch: str, num_classes: int, class_counts=None, head: str = "cosine", class_names=None,
                 text_head: str = "minilm", head_embeddings=None):
        super().__init__()
        self.visual = create_clip(arch).visual
        frozen = {"embeddings": head_embeddings} if head in FROZEN_HEADS else {}
        self.head = HEADS[head](self.visual.output_dim, num_classes, class_names, **frozen)
        self.num_classes = num_classes

    def image_features(self, images):
        return self.visual(images)

    def image_tower(self):
        return self.visual

    def loss(self, batch, step_rng):
        return F.cross_entropy(self.head(self.image_features(batch["images"])), batch["labels"])

    def class_logits(self, images, prompts=None):
        return self.head(self.image_features(images))

    def classifier_weights(self, classes=None):
        return self.head.class_weights()


@register("sl_frozen_text_head")
class FrozenTextHeadLearner(SupervisedLearner):
    """SL whose class weights are fixed text embeddings of the class names (`text_head`: MiniLM, or a CLIP trained on
    this world's captions)."""

    def __init__(self, arch: str, num_classes: int, class_counts=None, class_names=None, text_head: str = "minilm",
                 head_embeddings=None):
        super().__init__(arch, num_classes, head="frozen_text", class_names=class_names, text_head=text_head,
                         head_embeddings=head_embeddings)


@register("sl_batch_logit_adjust")
class BatchLogitAdjustLearner(SupervisedLearner):
    """Ours, not the paper's: a mechanism test. SL over the classes present in the batch with a +log(count in batch)
    logit adjustment, what the CLIP loss becomes when a batch holds repeated (template) captions."""

    def loss(self, batch, step_rng):
        labels = batch["labels"]
        present, targets, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        logits = self.head(self.image_features(batch["images"]), present) + counts.float().log()
        return F.cross_entropy(logits, targets)


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
                 vocab_weights: str = "uniform", head: str = "cosine", vocab_chunk: int = 0, class_names=None,
                 text_head: str = "minilm", head_embeddings=None):
        super().__init__(arch, num_classes, head=head, class_names=class_names, text_head=text_head,
                         head_embeddings=head_embeddings)
        counts = torch.as_tensor(class_counts if class_counts is not None else [1] * num_classes, dtype=torch.float64)
        self.num_to_sample = num_to_sample
        self.vocab_chunk = vocab_chunk
        self.register_buffer("vocab_weights", {"uniform": torch.ones_like(counts), "linear": counts,
                                               "sqrt": counts.sqrt()}[vocab_weights], persistent=False)

    def loss(self, batch, step_rng):
        """Cross-entropy over a per-step vocabulary; with `vocab_chunk`, each consecutive chunk of the batch gets its
        own vocabulary (fewer classes present per softmax, as in a small contrastive batch)."""
        labels = batch["labels"]
        features = self.image_features(batch["images"])
        chunk = self.vocab_chunk or len(labels)
        total = features.new_zeros(())
        for start in range(0, len(labels), chunk):
            part = labels[start:start + chunk]
            vocab, targets = sample_vocabulary(part.cpu(), self.num_classes, self.num_to_sample,
                                               self.vocab_weights.cpu(), step_rng)
            vocab, targets = vocab.to(labels.device), targets.to(labels.device)
            logits = self.head(features[start:start + chunk], vocab)
            total = total + F.cross_entropy(logits, targets, reduction="sum")
        return total / len(labels)


@register("sl_sampled_vocab_frozen_text")
class SampledVocabFrozenTextLearner(SampledVocabLearner):
    """The paper's Fig. 9 run: a frozen pretrained text head and a sampled vocabulary together."""

    def __init__(self, arch: str, num_classes: int, class_counts=None, num_to_sample: int = 16,
                 vocab_weights: str = "uniform", vocab_chunk: int = 0, class_names=None, text_head: str = "minilm",
                 head_embeddings=None):
        super().__init__(arch, num_classes, class_counts, num_to_sample, vocab_weights, "frozen_text", vocab_chunk,
                         class_names, text_head, head_embeddings)


def _check_declared_options() -> None:
    """Every option a learner declares must be a train option (a TrainSpec field): a spec sets it, a key hashes it."""
    for name in LEARNERS:
        unknown = [p for p in learner_options(name) if p not in TrainSpec.model_fields]
        if unknown:
            raise TypeError(f"learner {name!r} declares {unknown[0]!r}, which is not a train option (TrainSpec)")


_check_declared_options()
