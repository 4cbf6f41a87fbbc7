"""Streamed evaluation: the evaluation images are read, decoded and transformed batch by batch (`tailstudy.data`).

What is kept per image is its logits and image features (N x C and N x D float32): the metrics of
`tailstudy.evaluate.run_metrics` need the logits' top-5 and, for neural collapse, the class means and within-class
scatter of the features. Both are small beside the images (50k ImageNet images x 1024 RN50 features = 0.2 GB).
"""
from __future__ import annotations

import numpy as np
import torch

from tailstudy.data import ItemIndex, open_source

EVAL_BATCH = 256  # images per evaluation batch at most (a 1024-image batch at 224 px is 0.6 GB of floats)


@torch.no_grad()
def predict_stream(learner, index: ItemIndex, classes, device: torch.device, batch_size: int = EVAL_BATCH,
                   workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> (logits (N, C), image features (N, D)) over the indexed evaluation images, in index order; `classes`: what
    the learner's `encode_classes` returned for the scored classes."""
    learner.eval()
    source = open_source(index, learner.preprocess_cfg(), False, min(batch_size, EVAL_BATCH), workers, device)
    logits = feats = None
    try:
        for batch in source.batches(0):
            x = batch["images"].to(device, non_blocking=True)
            rows = batch["items"].numpy()
            f = learner.image_features(x).float().cpu().numpy()
            z = learner.class_logits(x, classes).float().cpu().numpy()
            if logits is None:
                logits = np.zeros((len(index), z.shape[1]), np.float32)
                feats = np.zeros((len(index), f.shape[1]), np.float32)
            logits[rows], feats[rows] = z, f
    finally:
        source.close()
    if logits is None:  # no images
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return logits, feats


def stream_predictor(batch_size: int = EVAL_BATCH, workers: int | None = None):
    """`tailstudy.evaluate.evaluate_learner`'s predictor over an ItemIndex: -> (logits, features) in index order."""
    def predictor(learner, index: ItemIndex, class_names: list[str], prompts: str, device: torch.device,
                  classes) -> tuple[np.ndarray, np.ndarray]:
        logits, feats = predict_stream(learner, index, classes, device, batch_size, workers)
        return (logits, feats) if len(index) else (np.zeros((0, len(class_names)), np.float32), feats)

    return predictor
