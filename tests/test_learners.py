"""Learners (per-step sampled vocabulary, restricted cross-entropy) and the resumable training loop."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from helpers.tiny_shards import shard_data
from tailstudy.models.learners import SampledVocabLearner, sample_vocabulary
from tailstudy.spec import TrainSpec
from tailstudy.train import CHECKPOINT, train


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------- sample_vocabulary


def check_vocab(vocab: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Invariants every vocabulary must satisfy."""
    ids = vocab.tolist()
    assert len(set(ids)) == len(ids), f"duplicate classes in vocabulary {ids}"
    assert all(0 <= c < num_classes for c in ids)
    assert set(labels.tolist()) <= set(ids), "a class present in the batch is missing from the vocabulary"
    assert targets.shape == labels.shape
    assert targets.dtype == torch.long
    assert ((targets >= 0) & (targets < len(ids))).all()
    assert torch.equal(vocab[targets].long(), labels.long()), "vocab[target] must give back the original label"


def test_sample_vocabulary_fewer_present_than_budget_fills_to_budget():
    labels = torch.tensor([3, 3, 7, 1, 7])
    weights = torch.ones(10)
    for seed in range(20):
        vocab, targets = sample_vocabulary(labels, 10, 6, weights, gen(seed))
        check_vocab(vocab, targets, labels, 10)
        assert len(vocab) == 6


def test_sample_vocabulary_budget_above_class_count_takes_every_class():
    labels = torch.tensor([2, 0, 2])
    vocab, targets = sample_vocabulary(labels, 5, 40, torch.ones(5), gen(0))
    check_vocab(vocab, targets, labels, 5)
    assert sorted(vocab.tolist()) == [0, 1, 2, 3, 4]


def test_sample_vocabulary_more_present_than_budget_keeps_exactly_the_present_classes():
    labels = torch.tensor([5, 0, 9, 2, 2, 7, 3, 5])
    vocab, targets = sample_vocabulary(labels, 12, 3, torch.ones(12), gen(0))
    check_vocab(vocab, targets, labels, 12)
    assert sorted(vocab.tolist()) == [0, 2, 3, 5, 7, 9]


def test_sample_vocabulary_exactly_budget_present_draws_nothing():
    labels = torch.tensor([4, 1, 4, 2])
    vocab, targets = sample_vocabulary(labels, 8, 3, torch.ones(8), gen(0))
    check_vocab(vocab, targets, labels, 8)
    assert sorted(vocab.tolist()) == [1, 2, 4]


def test_sample_vocabulary_invariants_on_random_batches():
    rng = gen(1234)
    for trial in range(300):
        num_classes = int(torch.randint(2, 30, (1,), generator=rng))
        num_to_sample = int(torch.randint(2, 40, (1,), generator=rng))
        batch = int(torch.randint(1, 25, (1,), generator=rng))
        labels = torch.randint(0, num_classes, (batch,), generator=rng)
        weights = torch.rand(num_classes, generator=rng) + 0.01
        vocab, targets = sample_vocabulary(labels, num_classes, num_to_sample, weights, gen(trial))
        check_vocab(vocab, targets, labels, num_classes)
        n_present = len(set(labels.tolist()))
        assert len(vocab) == max(n_present, min(num_to_sample, num_classes))


def test_sample_vocabulary_is_reproducible_for_a_seeded_generator():
    labels = torch.tensor([1, 1, 6])
    weights = torch.arange(1, 21, dtype=torch.float64)
    a = sample_vocabulary(labels, 20, 8, weights, gen(99))
    b = sample_vocabulary(labels, 20, 8, weights, gen(99))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    draws = {tuple(sample_vocabulary(labels, 20, 8, weights, gen(s))[0].tolist()) for s in range(20)}
    assert len(draws) > 1  # the generator really drives the draw


def test_sample_vocabulary_never_draws_zero_weight_classes():
    labels = torch.tensor([0, 0, 4])
    weights = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0])  # 2, 5, 7 have weight zero
    # absent classes with positive weight: 1, 3, 6, 8, 9 ; budget 6 -> 4 of them are drawn
    seen = Counter()
    for seed in range(300):
        vocab, targets = sample_vocabulary(labels, 10, 6, weights, gen(seed))
        check_vocab(vocab, targets, labels, 10)
        assert len(vocab) == 6
        assert not {2, 5, 7} & set(vocab.tolist())
        seen.update(vocab.tolist())
    assert set(seen) == {0, 1, 3, 4, 6, 8, 9}


def test_sample_vocabulary_extra_class_frequency_follows_weights():
    # class 0 present; one extra slot drawn from classes 1..3 with weights 1 : 2 : 7 (class 0's weight is ignored)
    labels = torch.tensor([0, 0])
    weights = torch.tensor([50.0, 1.0, 2.0, 7.0])
    rng = gen(7)
    n = 4000
    counts = Counter()
    for _ in range(n):
        vocab, _ = sample_vocabulary(labels, 4, 2, weights, rng)
        assert vocab[0].item() == 0 and len(vocab) == 2
        counts[vocab[1].item()] += 1
    assert counts[0] == 0
    for cls, p in {1: 0.1, 2: 0.2, 3: 0.7}.items():
        assert abs(counts[cls] / n - p) < 0.03, (cls, counts[cls] / n)


def test_sample_vocabulary_strongly_favoured_class_is_almost_always_drawn():
    labels = torch.tensor([0, 1])
    weights = torch.ones(12)
    weights[9] = 1e5
    rng = gen(11)
    hits = sum(9 in sample_vocabulary(labels, 12, 3, weights, rng)[0].tolist() for _ in range(500))
    assert hits >= 498  # P(miss) = 9 / (1e5 + 9) per draw


def test_sample_vocabulary_with_too_few_positive_weight_classes_draws_no_zero_weight_class():
    # reachable with vocab_weights 'linear'/'sqrt' when a class has training count 0 (curate keeps such classes);
    # at commit acc1778 torch.multinomial was asked for 3 extras and returned e.g. [2, 1, 0]: vocab [0, 2, 1, 0]
    labels = torch.tensor([0, 0])
    weights = torch.tensor([1.0, 1.0, 1.0, 0.0])  # absent with positive weight: 1 and 2 only; budget asks for 3
    for seed in range(10):
        vocab, targets = sample_vocabulary(labels, 4, 4, weights, gen(seed))
        ids = vocab.tolist()
        assert len(set(ids)) == len(ids), f"duplicates in {ids}"
        assert 3 not in ids, f"zero-weight class drawn: {ids}"
        assert sorted(ids) == [0, 1, 2]  # the vocabulary stops short of the budget instead
        assert torch.equal(vocab[targets], labels)
    # two present classes, two zero-weight absent ones: only the positive-weight class 2 is added
    labels = torch.tensor([1, 0, 1])
    for seed in range(10):
        vocab, targets = sample_vocabulary(labels, 5, 5, torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]), gen(seed))
        assert sorted(vocab.tolist()) == [0, 1, 2]
        assert torch.equal(vocab[targets], labels)


# ------------------------------------------------------------------------------- SampledVocabLearner.loss


def hand_cross_entropy(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, vocab: list[int],
                       labels: list[int]) -> float:
    """mean_i [ log sum_{c in vocab} exp(z_ic) - z_i,label_i ] with z_ic = <f_i, w_c> + b_c, in float64 scalars."""
    f, w, b = features.detach().double(), weight.detach().double(), bias.detach().double()
    total = 0.0
    for i, label in enumerate(labels):
        z = {c: float(f[i] @ w[c] + b[c]) for c in vocab}
        top = max(z.values())
        total += top + math.log(sum(math.exp(v - top) for v in z.values())) - z[label]
    return total / len(labels)


@pytest.fixture(scope="module")
def vocab_batch():
    torch.manual_seed(0)
    images = torch.rand(5, 3, 32, 32, generator=gen(5)) * 2 - 1
    labels = torch.tensor([1, 4, 1, 4, 4])
    return images, labels


def make_sampled_learner(num_to_sample: int) -> SampledVocabLearner:
    torch.manual_seed(1)
    learner = SampledVocabLearner("tiny", 6, class_counts=[1, 5, 2, 3, 2, 4], num_to_sample=num_to_sample,
                                  vocab_weights="linear", head="linear")  # the hand cross-entropy uses a bias
    with torch.no_grad():  # a head with clearly different rows, so the choice of vocabulary matters
        learner.head.weight.normal_(0, 1, generator=gen(2))
        learner.head.bias.normal_(0, 1, generator=gen(3))
    return learner.eval()


def test_sampled_vocab_loss_budget_equal_to_present_uses_only_present_classes(vocab_batch):
    images, labels = vocab_batch
    learner = make_sampled_learner(num_to_sample=2)  # present: {1, 4} -> no extra class
    with torch.no_grad():
        loss = learner.loss({"images": images, "labels": labels}, gen(0))
        feats = learner.image_features(images)
    expected = hand_cross_entropy(feats, learner.head.weight, learner.head.bias, [1, 4], labels.tolist())
    assert float(loss) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    full = hand_cross_entropy(feats, learner.head.weight, learner.head.bias, list(range(6)), labels.tolist())
    assert abs(full - expected) > 1e-3  # the restriction really changes the loss


def test_sampled_vocab_loss_with_one_sampled_extra_class(vocab_batch):
    images, labels = vocab_batch
    learner = make_sampled_learner(num_to_sample=3)
    with torch.no_grad():
        feats = learner.image_features(images)
        by_extra = {e: hand_cross_entropy(feats, learner.head.weight, learner.head.bias, [1, 4, e], labels.tolist())
                    for e in (0, 2, 3, 5)}
        for seed in range(6):
            loss = float(learner.loss({"images": images, "labels": labels}, gen(seed)))
            vocab, _ = sample_vocabulary(labels, 6, 3, torch.tensor([1.0, 5, 2, 3, 2, 4], dtype=torch.float64),
                                         gen(seed))
            extra = (set(vocab.tolist()) - {1, 4}).pop()
            assert loss == pytest.approx(by_extra[extra], rel=1e-5, abs=1e-6)
            # and it matches no other choice of extra class
            assert all(abs(loss - v) > 1e-4 for e, v in by_extra.items() if e != extra)


def test_sampled_vocab_loss_with_budget_over_class_count_is_full_cross_entropy(vocab_batch):
    images, labels = vocab_batch
    learner = make_sampled_learner(num_to_sample=50)
    with torch.no_grad():
        loss = learner.loss({"images": images, "labels": labels}, gen(0))
        feats = learner.image_features(images)
    expected = hand_cross_entropy(feats, learner.head.weight, learner.head.bias, list(range(6)), labels.tolist())
    assert float(loss) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_sampled_vocab_learner_weights_follow_the_option():
    counts = [4, 9, 1, 16]
    for option, expected in {"uniform": [1.0, 1, 1, 1], "linear": [4.0, 9, 1, 16], "sqrt": [2.0, 3, 1, 4]}.items():
        learner = SampledVocabLearner("tiny", 4, class_counts=counts, vocab_weights=option)
        assert learner.vocab_weights.tolist() == expected
        assert "vocab_weights" not in learner.state_dict()


# ------------------------------------------------------------------------------------------ train resume

NAMES = ["goldfish", "tench", "great white shark", "hen"]
CLASS_COUNTS = [20, 10, 5, 2, 3, 1]  # six classes; the batch labels use 0..3 so sampled vocabularies draw from 4, 5


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """36 random 32 px images in shards: 32 labelled with 4 classes, 4 open-world ones (-1)."""
    g = gen(0)
    n_labelled, n_open = 32, 4
    images = torch.randint(0, 256, (n_labelled + n_open, 32, 32, 3), dtype=torch.uint8, generator=g)
    labels = torch.cat([torch.arange(n_labelled) % 4, torch.full((n_open,), -1)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    captions = [f"a {NAMES[lab]}" if lab >= 0 else "a photo of something" for lab in labels.tolist()]
    return shard_data(tmp_path_factory.mktemp("tiny"), images.numpy(), labels.numpy(), captions)


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ after resume: {different[:5]}"


class Killed(Exception):
    pass


@pytest.mark.parametrize("kind", ["sl", "clip", "sl_sampled_vocab"])
def test_train_checkpoints_each_epoch_and_resumes_to_identical_weights(kind, tmp_path, tiny_data):
    data = tiny_data
    cfg = TrainSpec(arch="tiny", epochs=3, batch_size=16, device="cpu", num_to_sample=5, vocab_weights="linear")
    seed = 3

    # uninterrupted run; at each progress call the checkpoint of that epoch is already on disk
    full_dir = tmp_path / "full"
    full_dir.mkdir()
    seen = []

    def record(done, total, row):
        ckpt = torch.load(full_dir / CHECKPOINT, map_location="cpu", weights_only=False)
        seen.append((done, total, row["epoch"], ckpt["epoch"], len(ckpt["log"])))

    full, log_full = train(kind, data, CLASS_COUNTS, cfg, seed, full_dir, record)
    assert seen == [(1, 3, 0, 0, 1), (2, 3, 1, 1, 2), (3, 3, 2, 2, 3)]
    assert [r["epoch"] for r in log_full] == [0, 1, 2]
    final_ckpt = torch.load(full_dir / CHECKPOINT, map_location="cpu", weights_only=False)
    assert_same_state(final_ckpt["model"], full.state_dict())

    # killed right after epoch 1 finished (its checkpoint was written before progress ran)
    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()

    def kill(done, total, row):
        if done == 1:
            raise Killed

    with pytest.raises(Killed):
        train(kind, data, CLASS_COUNTS, cfg, seed, killed_dir, kill)
    after_kill = torch.load(killed_dir / CHECKPOINT, map_location="cpu", weights_only=False)
    assert after_kill["epoch"] == 0 and len(after_kill["log"]) == 1
    # training does move the weights between epoch 1 and the end, so a resume that lost state could not pass
    assert any(not torch.equal(v, full.state_dict()[k]) for k, v in after_kill["model"].items())

    calls = []
    resumed, log_resumed = train(kind, data, CLASS_COUNTS, cfg, seed, killed_dir, lambda d, t, r: calls.append(d))
    assert calls == [2, 3]  # epoch 1 is not trained again
    assert [r["epoch"] for r in log_resumed] == [0, 1, 2]
    assert log_resumed[0]["seconds"] == after_kill["log"][0]["seconds"]  # the first row comes from the checkpoint
    assert [r["loss"] for r in log_resumed] == [r["loss"] for r in log_full]
    assert_same_state(resumed.state_dict(), full.state_dict())

    # a finished work dir: calling train again trains nothing and returns the final weights
    again_calls = []
    again, log_again = train(kind, data, CLASS_COUNTS, cfg, seed, full_dir, lambda d, t, r: again_calls.append(d))
    assert again_calls == []
    assert [r["loss"] for r in log_again] == [r["loss"] for r in log_full]
    assert_same_state(again.state_dict(), full.state_dict())
