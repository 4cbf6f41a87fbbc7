"""Per-class evaluation: accuracy, prediction counts, correlation with training frequency, head/tail, neural collapse."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from tailstudy.curate import select_concepts
from tailstudy.data_eval import stream_predictor
from tailstudy.stats import spearman
from tailstudy.variants import prompt_templates


@torch.no_grad()
def encode_class_names(learner, class_names: list[str], prompts: str):
    """What a learner needs to score these classes (CLIP: one text embedding per class, its prompts averaged over
    `prompts`: a kind of tailstudy.variants.prompt_templates)."""
    learner.eval()
    templates = prompt_templates(prompts)
    return learner.encode_classes([[t(name) for t in templates] for name in class_names])


def evaluation_classes(targets: list[int], choice, names: dict[int, str]) -> list[int]:
    """The study's fixed evaluation class list (`evaluate.classes`): all targets, a named list, or class names."""
    return select_concepts(targets, choice, names, seed=0)


def classifier_rows(learner, classes, learner_ids: list[int], eval_ids: list[int]) -> np.ndarray:
    """The classifier's weight row per evaluation class (NaN rows for classes it has no output for)."""
    with torch.no_grad():
        weights = learner.classifier_weights(classes).float().cpu().numpy().astype(np.float64)
    if learner.zero_shot:
        return weights
    row = {cid: i for i, cid in enumerate(learner_ids)}
    out = np.full((len(eval_ids), weights.shape[1]), np.nan)
    for j, cid in enumerate(eval_ids):
        if cid in row:
            out[j] = weights[row[cid]]
    return out


def evaluate_learner(learner, images, concepts: np.ndarray, eval_ids: list[int], learner_ids: list[int],
                     counts: list[int], corpus_freq: dict[int, int], names: dict[int, str], prompts: str,
                     device: torch.device, trimmed: list[int] = (), predictor=None,
                     caption_prompt: str | None = None) -> tuple[dict, dict]:
    """Score one learner on the study's evaluation classes. A zero-shot learner (CLIP) scores every evaluation class
    by name, as the paper evaluates CLIP; a supervised learner scores the evaluation classes its head has, and images
    of the others count as wrong. -> (per-class table over eval_ids, run metrics).

    `caption_prompt`: the prompt the run's own captions wrap each class name in (`tailstudy.variants.caption_prompt`).
    A zero-shot learner is also scored with it (`top1_caption_prompt`): a top-1 well above the `prompts` one means
    those prompts are out of distribution for this text tower, and its results reflect the prompts, not the data."""
    scored = [names[c] for c in (eval_ids if learner.zero_shot else learner_ids)]
    encoded = encode_class_names(learner, scored, prompts)
    # `predictor`: how the images (an item index) reach the learner: streamed from the shards (tailstudy.data_eval)
    logits, feats = (predictor or stream_predictor())(learner, images, scored, prompts, device, classes=encoded)
    weights = classifier_rows(learner, encoded, learner_ids, eval_ids)
    if not learner.zero_shot:
        logits = align_logits(logits, learner_ids, eval_ids)
    index_of = {cid: i for i, cid in enumerate(eval_ids)}
    count_of = dict(zip(learner_ids, counts))
    train_counts = np.array([count_of.get(c, 0) for c in eval_ids], np.int64)
    in_subset = np.array([c in count_of for c in eval_ids])
    corpus_counts = np.array([corpus_freq.get(c, 0) for c in eval_ids], np.int64)
    y_true = np.array([index_of[int(c)] for c in concepts], np.int64)
    table, metrics = run_metrics(logits, feats, y_true, train_counts, [index_of[c] for c in trimmed if c in index_of],
                                 corpus_counts, in_subset, weights)
    metrics["top1_caption_prompt"] = float("nan")  # every run has the column (NULL where it does not apply)
    if learner.zero_shot and caption_prompt is not None:
        own = encode_class_names(learner, scored, caption_prompt)
        with torch.no_grad():
            own_logits = learner.logits_from_features(torch.from_numpy(feats).to(device), own).float().cpu().numpy()
        metrics["top1_caption_prompt"] = float((own_logits.argmax(1) == y_true).mean()) if len(y_true) else np.nan
    return table, metrics


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


def align_logits(logits: np.ndarray, learner_ids: list[int], eval_ids: list[int]) -> np.ndarray:
    """A head's logits (over its own classes) -> logits over the study's evaluation classes: a class the learner has
    no output for gets -inf, so it is never predicted and its images always count as wrong."""
    column = {cid: i for i, cid in enumerate(learner_ids)}
    out = np.full((len(logits), len(eval_ids)), -np.inf, dtype=np.float64)
    for j, cid in enumerate(eval_ids):
        if cid in column:
            out[:, j] = logits[:, column[cid]]
    return out


def _class_geometry(features: np.ndarray, labels: np.ndarray):
    """-> (classes present, class means, globally centred means, pseudo-inverse of the between-class covariance)."""
    classes = np.unique(labels)
    features = features.astype(np.float64)
    means = np.stack([features[labels == k].mean(0) for k in classes])
    centred = means - features.mean(0)
    sb = centred.T @ centred / len(classes)
    return classes, means, centred, np.linalg.pinv(sb, rcond=1e-10)


def _cosines(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def neural_collapse(features: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """NC1 = tr(Sw Sb^+) / C (within- vs between-class variability) and NC2 = mean over class pairs of
    |cos(mu_i, mu_j) + 1/(C-1)| for globally centred class means (0 for a simplex equiangular tight frame)."""
    if len(np.unique(labels)) < 2:
        return float("nan"), float("nan")
    nc1 = float(np.mean(per_class_nc1(features, labels)[1]))
    classes, _, centred, _ = _class_geometry(features, labels)
    c = len(classes)
    off = ~np.eye(c, dtype=bool)
    return nc1, float(np.mean(np.abs(_cosines(centred)[off] + 1.0 / (c - 1))))


def per_class_nc1(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NC1 of each class, tr(Sigma_k Sb^+) / C: its within-class variability relative to the between-class one (their
    mean over classes is the run's NC1). -> (classes present, values)."""
    classes, means, _, sb_pinv = _class_geometry(features, labels)
    values = []
    for k, mu in zip(classes, means):
        diff = features[labels == k].astype(np.float64) - mu
        values.append(np.einsum("nd,de,ne->", diff, sb_pinv, diff) / len(diff) / len(classes))
    return classes, np.asarray(values)


def etf_excess(vectors: np.ndarray) -> np.ndarray:
    """Per row (rows with NaN excluded and left NaN): its mean cosine to the other rows after centring them on their
    mean, minus the simplex-ETF value -1/(C-1). 0 = equiangular; > 0 = closer to the others (minority collapse)."""
    out = np.full(len(vectors), np.nan)
    known = ~np.isnan(vectors).any(1)
    c = int(known.sum())
    if c < 2:
        return out
    v = vectors[known] - vectors[known].mean(0)
    cos = _cosines(v)
    out[known] = (cos.sum(1) - np.diag(cos)) / (c - 1) + 1.0 / (c - 1)
    return out


def class_collapse(features: np.ndarray, labels: np.ndarray, n_classes: int,
                   weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-class neural-collapse values: nc1; nc2_mean (ETF excess of the class means); nc2_weight (ETF excess of the
    classifier's weight rows, NaN rows = classes it does not score). Classes without evaluation images are NaN."""
    out = {"nc1": np.full(n_classes, np.nan), "nc2_mean": np.full(n_classes, np.nan),
           "nc2_weight": np.full(n_classes, np.nan)}
    if len(np.unique(labels)) >= 2:
        classes, nc1 = per_class_nc1(features, labels)
        out["nc1"][classes] = nc1
        _, _, centred, _ = _class_geometry(features, labels)
        means = np.full((n_classes, centred.shape[1]), np.nan)
        means[classes] = centred
        out["nc2_mean"] = etf_excess(means)
    if weights is not None:
        out["nc2_weight"] = etf_excess(np.asarray(weights, np.float64))
    return out


def _slope(log_freq: np.ndarray, acc: np.ndarray) -> float:
    return float(np.polyfit(log_freq, acc, 1)[0]) if len(acc) > 1 and np.ptp(log_freq) > 0 else float("nan")


def _frequency_metrics(table: dict, counts: np.ndarray, mask: np.ndarray, suffix: str) -> dict[str, float]:
    """rho of accuracy and of prediction counts against a frequency, over the classes in `mask`."""
    acc, valid = table["acc"], mask & ~np.isnan(table["acc"])
    return {f"rho_acc{suffix}": spearman(counts[valid], acc[valid]),
            f"rho_pred{suffix}": spearman(counts[mask], table["pred_count"][mask])}


def _collapse_metrics(table: dict, counts: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Minority collapse: rho of each per-class NC value against training frequency."""
    out = {}
    for name in ("nc1", "nc2_mean", "nc2_weight"):
        ok = mask & ~np.isnan(table[name])
        out[f"rho_{name}_freq"] = spearman(counts[ok], table[name][ok])
    return out


def run_metrics(logits: np.ndarray, features: np.ndarray, y_true: np.ndarray, train_counts: np.ndarray,
                trimmed: list[int] | None = None, corpus_counts: np.ndarray | None = None,
                in_subset: np.ndarray | None = None,
                weights: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Run-level metrics over the evaluation classes (the columns of `logits`).

    `train_counts`: the subset's count per class; `in_subset`: which classes the subset has (default all): rho and the
    thirds against the subset's frequency use those. `corpus_counts`: the pre-training corpus's natural frequency:
    `rho_*_corpus` over every class, defined on a balanced subset too; the thirds follow it when the subset is flat.
    `trimmed` = class indices cut by tail trimming (their mean accuracy is `trimmed_acc`)."""
    train_counts = np.asarray(train_counts)
    in_subset = np.ones(len(train_counts), bool) if in_subset is None else np.asarray(in_subset, bool)
    corpus = np.asarray(corpus_counts) if corpus_counts is not None else train_counts
    y_pred = logits.argmax(1)
    k = min(5, logits.shape[1])
    top5 = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    table = per_class_table(y_true, y_pred, train_counts)
    table["corpus_count"] = corpus
    table.update(class_collapse(features, y_true, len(train_counts), weights))
    acc, members = table["acc"], np.flatnonzero(in_subset)
    ranking = train_counts if np.ptp(train_counts[members]) > 0 else corpus  # a flat subset: corpus frequency
    thirds = [members[t] for t in frequency_thirds(ranking[members])]
    valid = in_subset & ~np.isnan(acc)
    nc1, nc2 = neural_collapse(features, y_true)
    metrics = {
        "top1": float((y_pred == y_true).mean()),
        "top5": float((top5 == y_true[:, None]).any(1).mean()),
        **_frequency_metrics(table, train_counts, in_subset, ""),
        "head_acc": _nanmean(acc[thirds[0]]), "mid_acc": _nanmean(acc[thirds[1]]), "tail_acc": _nanmean(acc[thirds[2]]),
        "nc1": nc1,
        "nc2": nc2,
        "acc_logfreq_slope": _slope(np.log10(np.maximum(train_counts[valid], 1)), acc[valid]),
        "trimmed_acc": _nanmean(acc[trimmed]) if trimmed else float("nan"),
        **_frequency_metrics(table, corpus, np.ones(len(corpus), bool), "_corpus"),
        **_collapse_metrics(table, train_counts, in_subset),
    }
    return table, metrics


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, float)
    return float(np.mean(values[~np.isnan(values)])) if (~np.isnan(values)).any() else float("nan")


def _floats(values) -> pa.Array:
    """Float column with NaN written as null: an undefined value must read as NULL in SQL, never as NaN."""
    values = np.asarray(values, np.float64)
    return pa.array(values, pa.float64(), mask=np.isnan(values))


PER_CLASS_FLOATS = ("acc", "nc1", "nc2_mean", "nc2_weight")


def per_class_arrow(run_id: str, concept_ids: list[int], names: list[str], per_class: dict[str, np.ndarray]) -> pa.Table:
    n = len(concept_ids)
    corpus = per_class.get("corpus_count", per_class["train_count"])
    return pa.table({
        "run_id": pa.array([run_id] * n, pa.string()),
        "concept_id": pa.array(concept_ids, pa.int32()),
        "name": pa.array(names, pa.string()),
        "train_count": pa.array(per_class["train_count"], pa.int64()),
        "n_eval": pa.array(per_class["n_eval"], pa.int64()),
        "correct": pa.array(per_class["correct"], pa.int64()),
        "acc": _floats(per_class["acc"]),
        "pred_count": pa.array(per_class["pred_count"], pa.int64()),
        "corpus_count": pa.array(corpus, pa.int64()),
        **{name: _floats(per_class.get(name, np.full(n, np.nan))) for name in PER_CLASS_FLOATS[1:]},
    })


def metrics_arrow(labels: dict, metrics: dict[str, float]) -> pa.Table:
    """One run's metrics row: `labels` (run_id, kind, seed, train_key) then every metric as a nullable double."""
    return pa.table({**{k: [v] for k, v in labels.items()}, **{k: _floats([v]) for k, v in metrics.items()}})


def json_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    """Metrics for a JSON manifest: NaN (undefined) as null."""
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in metrics.items()}
