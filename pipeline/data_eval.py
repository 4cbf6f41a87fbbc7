"""Streamed evaluation: the evaluation images are read, decoded and transformed batch by batch (tailstudy.data).

What is kept per image is its logits and image features (N x C and N x D float32): the metrics of
`tailstudy.evaluate.run_metrics` need the logits' top-5 and, for neural collapse, the class means and within-class
scatter of the features. Both are small beside the images (50k ImageNet images x 1024 RN50 features = 0.2 GB).
"""
from __future__ import annotations

import numpy as np
import torch

from tailstudy.data import ItemIndex, images_on, open_batches, open_clip_transform, resolve_workers

EVAL_BATCH = 256  # images per evaluation batch at most (a 1024-image batch at 224 px is 0.6 GB of floats)


@torch.no_grad()
def predict_stream(learner, index: ItemIndex, class_names: list[str], prompts: str, device: torch.device,
                   batch_size: int = 256, workers: int | None = None,
                   classes=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (logits (N, C), image features (N, D), class index (N,)) over the indexed evaluation images."""
    from tailstudy.evaluate import prompt_templates

    learner.eval()
    if classes is None:
        templates = prompt_templates(prompts)
        classes = learner.encode_classes([[t(name) for t in templates] for name in class_names])
    cfg = learner.preprocess_cfg()
    size = cfg["size"] if isinstance(cfg["size"], int) else max(cfg["size"])
    batches = open_batches(index, open_clip_transform(cfg, False), min(batch_size, EVAL_BATCH),
                           resolve_workers(workers, size), shuffle=False, pin=device.type == "cuda")
    logits = feats = None
    try:
        for batch in batches:
            x = images_on(batch, device)
            rows = batch["items"].numpy()
            f = learner.image_features(x).float().cpu().numpy()
            z = learner.class_logits(x, classes).float().cpu().numpy()
            if logits is None:
                logits = np.zeros((len(index), z.shape[1]), np.float32)
                feats = np.zeros((len(index), f.shape[1]), np.float32)
            logits[rows], feats[rows] = z, f
    finally:
        batches.close()
    if logits is None:
        return np.zeros((0, len(class_names)), np.float32), np.zeros((0, 0), np.float32), index.label.copy()
    return logits, feats, index.label.copy()


def stream_predictor(batch_size: int = EVAL_BATCH, workers: int | None = None):
    """`tailstudy.evaluate.evaluate_learner`'s predictor over an ItemIndex: -> (logits, features) in index order."""
    def predictor(learner, index: ItemIndex, class_names: list[str], prompts: str, device: torch.device,
                  classes=None) -> tuple[np.ndarray, np.ndarray]:
        logits, feats, _ = predict_stream(learner, index, class_names, prompts, device, batch_size, workers, classes)
        return logits, feats

    return predictor
