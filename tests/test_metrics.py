"""Unit tests of pipeline/evaluate.py on hand-made data; every expected value is derived by hand in comments."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tailstudy.evaluate import frequency_thirds, neural_collapse, per_class_table, run_metrics, spearman


def logits_for(preds: list[int], num_classes: int) -> np.ndarray:
    """Logits whose argmax is `preds` (the predicted class gets 10, every other class a distinct value below 1)."""
    out = np.tile(np.linspace(0.0, 0.5, num_classes), (len(preds), 1))
    out[np.arange(len(preds)), preds] = 10.0
    return out


# ----------------------------------------------------------------------------------------------- spearman


def test_spearman_perfect_agreement_is_plus_one():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    # monotone but non-linear: still +1 (ranks only)
    assert spearman([1, 2, 3, 4, 5], [1, 8, 27, 64, 1000]) == pytest.approx(1.0)


def test_spearman_perfect_disagreement_is_minus_one():
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([0.1, 5, 7], [3, -1, -2]) == pytest.approx(-1.0)


def test_spearman_intermediate_value_by_hand():
    # ranks a = 1..5, ranks b = 2,1,4,3,5 ; d = -1,1,-1,1,0 ; sum d^2 = 4
    # rho = 1 - 6 * 4 / (5 * (25 - 1)) = 1 - 24/120 = 0.8
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # with ties: a ranks = 1.5,1.5,3,4 ; b ranks = 1,2,3,4 ; centred: a = -1,-1,.5,1.5 ; b = -1.5,-.5,.5,1.5
    # cov = 1.5 + .5 + .25 + 2.25 = 4.5 ; var a = 1+1+.25+2.25 = 4.5 ; var b = 2.25+.25+.25+2.25 = 5
    # rho = 4.5 / sqrt(4.5 * 5) = sqrt(4.5/5) = sqrt(0.9)
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))


def test_spearman_nan_for_constant_or_too_short_input():
    assert math.isnan(spearman([3, 3, 3, 3], [1, 2, 3, 4]))
    assert math.isnan(spearman([1, 2, 3, 4], [7, 7, 7, 7]))
    assert math.isnan(spearman([1], [2]))
    assert math.isnan(spearman([], []))


# ------------------------------------------------------------------------------------- frequency thirds


def test_frequency_thirds_orders_by_count_and_breaks_ties_by_index():
    # counts: class 1 (1000) > class 3 (100) > classes 0 and 2 (10, tie -> 0 first); 4 classes -> sizes 2,1,1
    head, mid, tail = frequency_thirds(np.array([10, 1000, 10, 100]))
    assert head.tolist() == [1, 3]
    assert mid.tolist() == [0]
    assert tail.tolist() == [2]
    # all tied: pure index order, 6 classes -> 2,2,2
    assert [t.tolist() for t in frequency_thirds(np.array([3] * 6))] == [[0, 1], [2, 3], [4, 5]]
    # ascending counts reverse the order, 7 classes -> 3,2,2
    assert [t.tolist() for t in frequency_thirds(np.arange(1, 8))] == [[6, 5, 4], [3, 2], [1, 0]]


# ------------------------------------------------------------------------- per-class table and run metrics

# Four classes. Training counts: 10, 1000, 10, 100.
# Evaluation samples (true -> predicted):
#   class 0: 0,0,1,1       -> correct 2 / 4 = 0.5
#   class 1: 1,1           -> correct 2 / 2 = 1.0
#   class 2: 2,1,1,3       -> correct 1 / 4 = 0.25
#   class 3: 3,0           -> correct 1 / 2 = 0.5
# predictions per class: 0 -> 2 (from class 0) + 1 (from class 3) = 3 ; 1 -> 2 + 2 + 2 = 6 ; 2 -> 1 ; 3 -> 1 + 1 = 2
TRAIN_COUNTS_4 = np.array([10, 1000, 10, 100])
Y_TRUE_4 = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3])
Y_PRED_4 = np.array([0, 0, 1, 1, 1, 1, 2, 1, 1, 3, 3, 0])


def test_per_class_table_by_hand():
    table = per_class_table(Y_TRUE_4, Y_PRED_4, TRAIN_COUNTS_4)
    assert table["train_count"].tolist() == [10, 1000, 10, 100]
    assert table["n_eval"].tolist() == [4, 2, 4, 2]
    assert table["correct"].tolist() == [2, 2, 1, 1]
    np.testing.assert_allclose(table["acc"], [0.5, 1.0, 0.25, 0.5])
    assert table["pred_count"].tolist() == [3, 6, 1, 2]


def test_per_class_table_class_without_eval_samples_has_nan_accuracy():
    # class 2 never appears in y_true (but is predicted once); class 3 is neither true nor predicted
    table = per_class_table(np.array([0, 0, 1]), np.array([0, 2, 1]), np.array([5, 5, 5, 5]))
    assert table["n_eval"].tolist() == [2, 1, 0, 0]
    assert table["correct"].tolist() == [1, 1, 0, 0]
    assert table["acc"][:2].tolist() == [0.5, 1.0]
    assert np.isnan(table["acc"][2]) and np.isnan(table["acc"][3])
    assert table["pred_count"].tolist() == [1, 1, 1, 0]


def test_run_metrics_by_hand_four_classes():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(len(Y_TRUE_4), 5))
    per_class, m = run_metrics(logits_for(Y_PRED_4.tolist(), 4), features, Y_TRUE_4, TRAIN_COUNTS_4)

    assert per_class["n_eval"].tolist() == [4, 2, 4, 2]
    assert per_class["correct"].tolist() == [2, 2, 1, 1]
    assert per_class["pred_count"].tolist() == [3, 6, 1, 2]
    # top1 = (2 + 2 + 1 + 1) / 12
    assert m["top1"] == pytest.approx(0.5)
    # only 4 classes: k = min(5, 4) = 4 covers every class
    assert m["top5"] == pytest.approx(1.0)
    # rho_acc: count ranks 1.5,4,1.5,3 ; acc ranks (0.5,1,.25,.5) 2.5,4,1,2.5 ; both mean 2.5
    # centred: x = -1,1.5,-1,.5 ; y = 0,1.5,-1.5,0 ; sxy = 2.25 + 1.5 = 3.75 ; sxx = 4.5 ; syy = 4.5 -> 5/6
    assert m["rho_acc"] == pytest.approx(5 / 6)
    # rho_pred: pred counts 3,6,1,2 -> ranks 3,4,1,2 ; centred y = .5,1.5,-1.5,-.5
    # sxy = -.5 + 2.25 + 1.5 - .25 = 3 ; syy = 5 -> 3 / sqrt(4.5 * 5)
    assert m["rho_pred"] == pytest.approx(3 / math.sqrt(22.5))
    # thirds: head {1, 3}, mid {0}, tail {2}
    assert m["head_acc"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["mid_acc"] == pytest.approx(0.5)
    assert m["tail_acc"] == pytest.approx(0.25)
    # slope of acc on log10 count: x = 1,3,1,2 (mean 1.75), y = .5,1,.25,.5 (mean .5625)
    # sxy = (-.75)(-.0625) + (1.25)(.4375) + (-.75)(-.3125) + (.25)(-.0625) = .8125 ; sxx = 2.75 -> 13/44
    assert m["acc_logfreq_slope"] == pytest.approx(13 / 44)
    nc1, nc2 = neural_collapse(features, Y_TRUE_4)
    assert m["nc1"] == pytest.approx(nc1)
    assert m["nc2"] == pytest.approx(nc2)


def test_run_metrics_by_hand_with_unevaluated_and_zero_count_classes():
    # Five classes, training counts 5, 50, 0, 50, 500.
    # order by count (ties by index): 4, 1, 3, 0, 2 -> thirds of sizes 2,2,1: head {4,1}, mid {3,0}, tail {2}
    # evaluation (true -> pred): class 0 none ; class 1: 1,1 ; class 2: 2,4 ; class 3: 1,4 ; class 4: 4,4
    # acc = nan, 1, .5, 0, 1 ; pred counts = 0, 3, 1, 0, 4
    counts = np.array([5, 50, 0, 50, 500])
    y_true = np.array([1, 1, 2, 2, 3, 3, 4, 4])
    y_pred = [1, 1, 2, 4, 1, 4, 4, 4]
    per_class, m = run_metrics(logits_for(y_pred, 5), np.random.default_rng(1).normal(size=(8, 3)), y_true, counts)

    assert per_class["n_eval"].tolist() == [0, 2, 2, 2, 2]
    assert per_class["correct"].tolist() == [0, 2, 1, 0, 2]
    assert np.isnan(per_class["acc"][0])
    assert per_class["acc"][1:].tolist() == [1.0, 0.5, 0.0, 1.0]
    assert per_class["pred_count"].tolist() == [0, 3, 1, 0, 4]
    assert m["top1"] == pytest.approx(5 / 8)
    assert m["top5"] == pytest.approx(1.0)  # k = 5 = every class
    assert m["head_acc"] == pytest.approx(1.0)  # classes 4, 1
    assert m["mid_acc"] == pytest.approx(0.0)  # class 3 (class 0 has no eval samples and is skipped)
    assert m["tail_acc"] == pytest.approx(0.5)  # class 2
    # rho_acc over the 4 evaluated classes: counts 50,0,50,500 -> ranks 2.5,1,2.5,4 ; acc 1,.5,0,1 -> 3.5,2,1,3.5
    # centred x = 0,-1.5,0,1.5 ; y = 1,-.5,-1.5,1 ; sxy = .75 + 1.5 = 2.25 ; sxx = syy = 4.5 -> 0.5
    assert m["rho_acc"] == pytest.approx(0.5)
    # rho_pred over all 5: count ranks 2,3.5,1,3.5,5 ; pred ranks (0,3,1,0,4) 1.5,4,3,1.5,5 ; means 3
    # centred x = -1,.5,-2,.5,2 ; y = -1.5,1,0,-1.5,2 ; sxy = 1.5+.5+0-.75+4 = 5.25 ; sxx = syy = 9.5
    assert m["rho_pred"] == pytest.approx(5.25 / 9.5)
    # slope over evaluated classes; log10(max(count, 1)): L, 0, L, L+1 with L = log10(50) ; acc 1, .5, 0, 1
    # mean x = (3L+1)/4, mean y = .625 ; sxy = (L+3)/8 ; sxx = (3L^2 + 2L + 3)/4
    L = math.log10(50)
    assert m["acc_logfreq_slope"] == pytest.approx((L + 3) / (2 * (3 * L * L + 2 * L + 3)))


@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")  # tail third has no eval samples
def test_run_metrics_top5_with_more_than_five_classes():
    # 7 classes; the true class is ranked 1st, 5th and 6th in the three rows -> top-5 hits 2 of 3; top-1 hits 1 of 3
    logits = np.array([
        [9, 1, 2, 3, 4, 5, 6],  # true 0 ranked 1st
        [7, 6, 5, 4, 3, 2, 1],  # true 4 (value 3): values above it 7,6,5,4 -> 5th
        [1, 2, 3, 4, 5, 6, 7],  # true 1 (value 2): values above it 7,6,5,4,3 -> 6th
    ], dtype=float)
    y_true = np.array([0, 4, 1])
    _, m = run_metrics(logits, np.random.default_rng(2).normal(size=(3, 4)), y_true, np.arange(7, 0, -1) * 10)
    assert m["top1"] == pytest.approx(1 / 3)
    assert m["top5"] == pytest.approx(2 / 3)
    # thirds by count 70..10: head {0,1,2} (acc 1, 0, -), mid {3,4} (acc -, 0), tail {5,6} without eval samples
    assert m["head_acc"] == pytest.approx(0.5)
    assert m["mid_acc"] == pytest.approx(0.0)
    assert math.isnan(m["tail_acc"])


# --------------------------------------------------------------------------------------- neural collapse


def simplex_etf(c: int, dim: int, scale: float = 3.0, seed: int = 0) -> np.ndarray:
    """(c, dim) class means forming a simplex ETF (pairwise cosine -1/(c-1)), rotated into `dim` dimensions."""
    m = math.sqrt(c / (c - 1)) * (np.eye(c) - np.ones((c, c)) / c)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    return scale * m @ q[:c]


def collapsed_features(means: np.ndarray, per_class: int, offset: np.ndarray | None = None):
    labels = np.repeat(np.arange(len(means)), per_class)
    feats = means[labels] + (0 if offset is None else offset)
    return feats, labels


def test_simplex_etf_helper_is_equiangular():
    means = simplex_etf(4, 6)
    unit = means / np.linalg.norm(means, axis=1, keepdims=True)
    cos = unit @ unit.T
    np.testing.assert_allclose(cos[~np.eye(4, dtype=bool)], -1 / 3, atol=1e-12)
    np.testing.assert_allclose(means.sum(0), 0, atol=1e-12)


@pytest.mark.parametrize("c", [2, 3, 4, 6])
def test_neural_collapse_simplex_etf_without_spread_is_zero(c):
    means = simplex_etf(c, c + 3, seed=c)
    # a global offset must not matter: class means are centred on the global mean
    feats, labels = collapsed_features(means, per_class=5, offset=np.full(c + 3, 7.5))
    nc1, nc2 = neural_collapse(feats, labels)
    assert nc1 == pytest.approx(0.0, abs=1e-9)
    assert nc2 == pytest.approx(0.0, abs=1e-9)


def test_neural_collapse_within_class_noise_increases_nc1():
    means = simplex_etf(4, 8)
    feats, labels = collapsed_features(means, per_class=20)
    noise = np.random.default_rng(3).normal(size=feats.shape)
    values = [neural_collapse(feats + s * noise, labels)[0] for s in (0.0, 0.05, 0.2, 0.8)]
    assert values[0] == pytest.approx(0.0, abs=1e-9)
    assert values[1] > 1e-4
    assert values[0] < values[1] < values[2] < values[3]


def test_neural_collapse_nc1_scales_with_noise_variance_when_means_are_fixed():
    # noise centred within each class leaves the class means (so Sb and NC2) unchanged, and Sw scales by s^2
    means = simplex_etf(3, 5)
    feats, labels = collapsed_features(means, per_class=10)
    noise = np.random.default_rng(4).normal(size=feats.shape)
    for k in range(3):
        noise[labels == k] -= noise[labels == k].mean(0)
    nc1_a, nc2_a = neural_collapse(feats + 0.1 * noise, labels)
    nc1_b, nc2_b = neural_collapse(feats + 0.2 * noise, labels)
    assert nc1_a > 0
    assert nc1_b == pytest.approx(4 * nc1_a, rel=1e-9)
    assert nc2_a == pytest.approx(0.0, abs=1e-9)
    assert nc2_b == pytest.approx(0.0, abs=1e-9)


def test_neural_collapse_non_equiangular_means_give_positive_nc2():
    # three classes on a line: means (1,0), (1,0), (-2,0) (already centred, balanced classes)
    # cos: (0,1) = 1, (0,2) = (1,2) = -1 ; |1 + 1/2| = 1.5, |-1 + 1/2| = 0.5
    # mean over the 6 off-diagonal entries = (2 * 1.5 + 4 * 0.5) / 6 = 5/6
    means = np.array([[1.0, 0.0], [1.0, 0.0], [-2.0, 0.0]])
    feats, labels = collapsed_features(means, per_class=4)
    _, nc2 = neural_collapse(feats, labels)
    assert nc2 == pytest.approx(5 / 6)
    # two of four classes nearly equal (the rest ETF-like) -> clearly away from the simplex
    near = simplex_etf(4, 6)
    near[1] = near[0] + 1e-3
    feats, labels = collapsed_features(near, per_class=3)
    _, nc2 = neural_collapse(feats, labels)
    assert nc2 > 0.2


def test_neural_collapse_nc1_by_hand_one_dimension():
    # class 0: {-2, 0} (mean -1, within variance 1) ; class 1: {0.5, 1.5} (mean 1, within variance 0.25)
    # global mean 0 ; Sb = ((-1)^2 + 1^2) / 2 = 1 ; Sw = (1 + 0.25) / 2 = 0.625 ; NC1 = 0.625 / 1 / 2 = 0.3125
    feats = np.array([[-2.0], [0.0], [0.5], [1.5]])
    labels = np.array([0, 0, 1, 1])
    nc1, nc2 = neural_collapse(feats, labels)
    assert nc1 == pytest.approx(0.3125)
    assert nc2 == pytest.approx(0.0, abs=1e-12)  # two opposite means: cos = -1 = -1/(C-1)


def test_neural_collapse_nc1_by_hand_two_dimensions_uses_pseudo_inverse():
    # means (-1, 0) and (1, 0): Sb = diag(1, 0), Sb^+ = diag(1, 0) -> NC1 = Sw[0,0] / 2 ; spread along y is ignored
    # class 0: (-2, 3), (0, -3) -> x variance 1 ; class 1: (0.5, 1), (1.5, -1) -> x variance 0.25
    # Sw[0,0] = (1 + 0.25) / 2 = 0.625 -> NC1 = 0.3125
    feats = np.array([[-2.0, 3.0], [0.0, -3.0], [0.5, 1.0], [1.5, -1.0]])
    labels = np.array([0, 0, 1, 1])
    nc1, _ = neural_collapse(feats, labels)
    assert nc1 == pytest.approx(0.3125)
    # spread only orthogonal to the between-class direction gives NC1 = 0
    feats_y = np.array([[-1.0, 5.0], [-1.0, -5.0], [1.0, 2.0], [1.0, -2.0]])
    assert neural_collapse(feats_y, labels)[0] == pytest.approx(0.0, abs=1e-12)


def test_neural_collapse_labels_need_not_be_contiguous():
    # same as the 1-D case with labels 3 and 7
    feats = np.array([[-2.0], [0.0], [0.5], [1.5]])
    nc1, _ = neural_collapse(feats, np.array([3, 3, 7, 7]))
    assert nc1 == pytest.approx(0.3125)


def test_neural_collapse_single_class_is_nan():
    nc1, nc2 = neural_collapse(np.random.default_rng(5).normal(size=(6, 3)), np.zeros(6, dtype=int))
    assert math.isnan(nc1) and math.isnan(nc2)


# ------------------------------------------- corpus frequency, fixed eval classes, per-class collapse, nulls


def test_balanced_subset_gets_a_corpus_rho_and_corpus_thirds():
    # flat subset (10 each): subset rho undefined; corpus counts 5, 50, 500, 5000 rank the classes
    y_true = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    y_pred = np.array([1, 1, 1, 2, 2, 3, 3, 3])  # predictions per class: 0, 3, 2, 3
    _, m = run_metrics(logits_for(y_pred.tolist(), 4), np.random.default_rng(3).normal(size=(8, 4)), y_true,
                       np.array([10, 10, 10, 10]), corpus_counts=np.array([5, 50, 500, 5000]))
    assert math.isnan(m["rho_pred"]) and math.isnan(m["rho_acc"])
    # acc: 0, .5, .5, 1 against corpus ranks 1..4 -> ranks 1, 2.5, 2.5, 4 -> rho = 4.5 / sqrt(5 * 4.5)
    assert m["rho_acc_corpus"] == pytest.approx(4.5 / math.sqrt(22.5))
    # pred counts 0, 3, 2, 3 -> ranks 1, 3.5, 2, 3.5 ; centred y = -1.5, 1, -.5, 1 (syy = 4.5) against x = -1.5, -.5,
    # .5, 1.5 (sxx = 5): sxy = 2.25 - .5 - .25 + 1.5 = 3
    assert m["rho_pred_corpus"] == pytest.approx(3 / math.sqrt(5 * 4.5))
    # thirds by corpus frequency: head {3, 2}, mid {1}, tail {0}
    assert m["head_acc"] == pytest.approx(0.75) and m["mid_acc"] == pytest.approx(0.5) and m["tail_acc"] == 0.0


def test_align_logits_gives_unknown_eval_classes_minus_infinity():
    from tailstudy.evaluate import align_logits

    logits = np.array([[1.0, 5.0], [3.0, 2.0]])  # a head over concepts 7 and 9
    out = align_logits(logits, [7, 9], [9, 4, 7])
    assert out[:, 0].tolist() == [5.0, 2.0] and out[:, 2].tolist() == [1.0, 3.0]
    assert np.isneginf(out[:, 1]).all()
    assert out.argmax(1).tolist() == [0, 2]


def test_classes_outside_the_subset_are_scored_but_left_out_of_subset_rho():
    # eval classes 0..3; the subset has 0, 1, 2 (class 3 never trained: count 0, always wrong)
    y_true = np.array([0, 1, 2, 3])
    logits = np.array([[5, 0, 0, -np.inf], [0, 5, 0, -np.inf], [5, 0, 0, -np.inf], [0, 5, 0, -np.inf]])
    table, m = run_metrics(logits, np.eye(4), y_true, np.array([100, 10, 1, 0]),
                           corpus_counts=np.array([100, 10, 1, 50]), in_subset=np.array([True, True, True, False]))
    assert table["acc"].tolist() == [1.0, 1.0, 0.0, 0.0]
    # subset rho over classes 0-2: pred counts 2, 2, 0 vs 100, 10, 1 -> ranks 2.5, 2.5, 1 vs 3, 2, 1
    # centred y = .5, .5, -1 (syy = 1.5), x = 1, 0, -1 (sxx = 2): sxy = .5 + 1 = 1.5
    assert m["rho_pred"] == pytest.approx(1.5 / math.sqrt(1.5 * 2))
    assert m["top1"] == pytest.approx(0.5)


def test_per_class_nc1_averages_to_the_run_nc1():
    from tailstudy.evaluate import class_collapse

    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(4), 6)
    feats = rng.normal(size=(4, 5))[labels] * 3 + rng.normal(size=(24, 5)) * np.repeat([0.1, 0.2, 0.4, 0.8], 6)[:, None]
    values = class_collapse(feats, labels, 4)
    assert np.mean(values["nc1"]) == pytest.approx(neural_collapse(feats, labels)[0])
    assert np.all(np.diff(values["nc1"]) > 0)  # more within-class spread, larger per-class NC1


def test_etf_excess_is_zero_on_a_simplex_and_positive_for_collapsed_classes():
    from tailstudy.evaluate import etf_excess

    simplex = np.eye(4) - 0.25
    np.testing.assert_allclose(etf_excess(simplex), 0.0, atol=1e-12)
    # classes 2 and 3 collapsed onto nearly the same direction: both sit closer to the others than an ETF
    collapsed = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0.05], [0, 1.0, -0.05], [np.nan] * 3])
    out = etf_excess(collapsed)
    assert out[2] > 0 and out[3] > 0 and np.isnan(out[4])


def test_undefined_values_are_written_as_null():
    import duckdb

    from tailstudy.evaluate import metrics_arrow, per_class_arrow

    _, m = run_metrics(logits_for([0, 1], 2), np.eye(2), np.array([0, 1]), np.array([5, 5]))
    row = metrics_arrow({"run_id": "r", "model": "sl", "seed": 0, "train_key": "t"}, m)
    table, _ = run_metrics(logits_for([0, 1], 3), np.eye(2), np.array([0, 1]), np.array([5, 5, 5]))
    per = per_class_arrow("r", [1, 2, 3], ["a", "b", "c"], table)
    assert duckdb.sql("select rho_pred is null, avg(rho_pred) is null from row group by all").fetchall() == [(True, True)]
    assert duckdb.sql("select count(*) from per where acc is null").fetchone()[0] == 1
