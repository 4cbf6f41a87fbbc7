"""open_clip towers: the registered model configs (`configs/*.json`), CLIP models built from them (optionally with the
packaged MiniLM as text tower), their tokenizers, and configs open_clip loads by itself (`local-dir:`)."""
from __future__ import annotations

import contextlib
import copy
import json
import logging
from functools import lru_cache
from pathlib import Path

import open_clip
import torch
from torch import nn

from tailstudy.models.minilm import load_minilm, minilm_path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@lru_cache(maxsize=None)
def register_configs() -> None:
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


OPEN_CLIP_WEIGHTS = "open_clip_pytorch_model.bin"  # a name open_clip's `local-dir:` loader looks for
OPEN_CLIP_CONFIG = "open_clip_config.json"


def clip_model_cfg(arch: str, text_tower: str = "scratch") -> dict:
    """The full open_clip model config of a CLIP learner (embedded in exports, so loading needs no registry)."""
    register_configs()
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
    register_configs()  # else open_clip falls back to its default tokenizer (77 tokens) for our configs
    if text_tower == "scratch":
        return open_clip.get_tokenizer(arch)
    context = open_clip.get_model_config(arch)["text_cfg"].get("context_length", 77)
    return open_clip.tokenizer.HFTokenizer(minilm_path(), context_length=context)


@lru_cache(maxsize=4)
def sentence_embeddings(texts: tuple[str, ...]) -> torch.Tensor:
    """Normalised MiniLM sentence embeddings (the text encoder of the frozen-text-head learner)."""
    encoder = load_minilm("cpu")
    return torch.from_numpy(encoder.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)).float()


def train_problem(device: str, arch: str) -> str | None:
    """What stops a run of `arch` on `device` on this machine (CUDA asked, none visible; an unknown model config)."""
    if device == "cuda" and not torch.cuda.is_available():
        return "train.device: cuda, but no CUDA device is visible on this machine (use auto or cpu)"
    register_configs()
    known = open_clip.list_models()
    if arch in known:
        return None
    close = [a for a in known if a.lower().startswith(arch.lower()[:4])][:5]
    hint = f" (e.g. {', '.join(close)})" if close else " (tiny, or an open_clip config such as ViT-B-32)"
    return f"train.arch: unknown model config {arch!r}{hint}"


def input_pixels(arch: str) -> int:
    """Pixels of one input image of a model config (224 x 224 where the config does not say)."""
    register_configs()
    size = (open_clip.get_model_config(arch) or {}).get("vision_cfg", {}).get("image_size", 224)
    return int(size[0] * size[1]) if isinstance(size, (list, tuple)) else int(size) ** 2


def image_size_of(arch: str) -> int:
    """Input size of a registered open_clip config (the benchmark renders its corpus at this size)."""
    register_configs()
    size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
    return size if isinstance(size, int) else size[0]
