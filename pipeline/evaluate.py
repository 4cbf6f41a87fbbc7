"""Per-class evaluation: accuracy, prediction counts, correlation with training frequency, head/tail, neural collapse."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from pipeline.stats import spearman
from pipeline.train import to_float

EVALUATE_VERSION = 2



def prompt_templates(kind: str) -> list:
    """'a_cname': the single prompt "a {name}"; 'templates': the 80 OpenAI ImageNet prompts, averaged per class."""
    if kind == "templates":
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        return list(OPENAI_IMAGENET_TEMPLATES)
    return [lambda name: f"a {name}"]


@torch.no_grad()
def predict(learner, images: torch.Tensor, class_names: list[str], prompts: str, device: torch.device,
            batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """-> (logits (N, C), image features (N, D)) on the evaluation images."""
    learner.eval()
    templates = prompt_templates(prompts)
    class_prompts = [[t(name) for t in templates] for name in class_names]
    classes = learner.encode_classes(class_prompts)
    logits, feats = [], []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size], device)
        feats.append(learner.image_features(x).float().cpu())
        logits.append(learner.class_logits(x, classes).float().cpu())
    return torch.cat(logits).numpy(), torch.cat(feats).numpy()


def per_class_table(y_true: np.ndarray, y_pred: np.ndarray, train_counts: np.ndarray) -> dict[str, np.ndarray]:
    c = len(train_counts)
    n_eval = np.bincount(y_true, minlength=c)
    correct = np.bincount(y_true[y_true == y_pred], minlength=c)
    acc = np.divide(correct, n_eval, out=np.full(c, np.nan), where=n_eval > 0)
    return {"train_count": np.asarray(train_counts), "n_eval": n_eval, "correct": correct, "acc": acc,
            "pred_count": np.bincount(y_pred, minlength=c)}


def frequency_thirds(train_counts: np.ndarray) -> list[np.ndarray]:
    """Class indices of the head, middle and tail thirds by training frequency (ties by class index)."""
    order = np.lexsort((np.arange(len(train_counts)), -np.asarray(train_counts)))
    return np.array_split(order, 3)


def neural_collapse(features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """NC1 = tr(Sw Sb^+) / C (within- vs between-class variability) and NC2 = mean over class pairs of
    |cos(mu_i, mu_j) + 1/(C-1)| for globally centred class means (0 for a simplex equiangular tight frame)."""
    classes = np.unique(labels)
    c = len(classes)
    if c < 2:
        return float("nan"), float("nan")
    features = features.astype(np.float64)
    global_mean = features.mean(0)
    means = np.stack([features[labels == k].mean(0) for k in classes])
    centred = means - global_mean
    sb = centred.T @ centred / c
    sw = np.zeros_like(sb)
    for k, mu in zip(classes, means):
        diff = features[labels == k] - mu
        sw += diff.T @ diff / len(diff)
    sw /= c
    nc1 = float(np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10)) / c)
    unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    cos = unit @ unit.T
    off = ~np.eye(c, dtype=bool)
    nc2 = float(np.mean(np.abs(cos[off] + 1.0 / (c - 1))))
    return nc1, nc2


def run_metrics(logits: np.ndarray, features: np.ndarray, y_true: np.ndarray, train_counts: np.ndarray,
                trimmed: list[int] | None = None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Run-level metrics; `trimmed` = class indices cut by tail trimming (their mean accuracy is `trimmed_acc`)."""
    y_pred = logits.argmax(1)
    k = min(5, logits.shape[1])
    top5 = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    per_class = per_class_table(y_true, y_pred, train_counts)
    acc = per_class["acc"]
    thirds = frequency_thirds(train_counts)
    valid = ~np.isnan(acc)
    log_freq = np.log10(np.maximum(train_counts, 1))
    slope = float(np.polyfit(log_freq[valid], acc[valid], 1)[0]) if valid.sum() > 1 and np.ptp(log_freq[valid]) > 0 \
        else float("nan")
    nc1, nc2 = neural_collapse(features, y_true)
    metrics = {
        "top1": float((y_pred == y_true).mean()),
        "top5": float((top5 == y_true[:, None]).any(1).mean()),
        "rho_acc": spearman(train_counts[valid], acc[valid]),
        "rho_pred": spearman(train_counts, per_class["pred_count"]),
        "head_acc": float(np.nanmean(acc[thirds[0]])),
        "mid_acc": float(np.nanmean(acc[thirds[1]])),
        "tail_acc": float(np.nanmean(acc[thirds[2]])),
        "nc1": nc1,
        "nc2": nc2,
        "acc_logfreq_slope": slope,
        "trimmed_acc": float(np.nanmean(acc[trimmed])) if trimmed else float("nan"),
    }
    return per_class, metrics


def per_class_arrow(run_id: str, concept_ids: list[int], names: list[str], per_class: dict[str, np.ndarray]) -> pa.Table:
    return pa.table({
        "run_id": pa.array([run_id] * len(concept_ids), pa.string()),
        "concept_id": pa.array(concept_ids, pa.int32()),
        "name": pa.array(names, pa.string()),
        "train_count": pa.array(per_class["train_count"], pa.int64()),
        "n_eval": pa.array(per_class["n_eval"], pa.int64()),
        "correct": pa.array(per_class["correct"], pa.int64()),
        "acc": pa.array(per_class["acc"], pa.float64()),
        "pred_count": pa.array(per_class["pred_count"], pa.int64()),
    })
