"""The learners beyond plain CLIP / SL: heads, the frozen text head, batch logit adjustment, a MiniLM text tower."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tailstudy.models import known_learners, make_learner, reads_captions


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def batch(n=6, classes=(0, 2, 2, 5, 5, 5)):
    g = torch.Generator().manual_seed(0)
    return {"images": torch.rand(n, 3, 32, 32, generator=g) * 2 - 1, "labels": torch.tensor(classes)}


def test_every_registered_learner_builds_and_trains_one_step():
    from tailstudy.models.learners import Learner

    for name in known_learners():
        torch.manual_seed(0)
        learner = make_learner(name, arch="tiny", num_classes=6, class_counts=[5, 1, 4, 1, 1, 9],
                               class_names=["tench", "goldfish", "great white shark", "tiger shark", "hammerhead",
                                            "electric ray"])
        assert isinstance(learner, Learner)
        b = batch()
        if reads_captions(name):
            b["tokens"] = learner.tokenize(["a tench", "a goldfish", "a goldfish", "a ray", "a ray", "a ray"])
        loss = learner.loss(b, torch.Generator().manual_seed(1))
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        logits = learner.class_logits(b["images"], [["a tench"], ["a goldfish"], ["a shark"], ["a tiger shark"],
                                                    ["a hammerhead"], ["an electric ray"]])
        assert logits.shape == (6, 6)


def test_cosine_head_is_scaled_cosine_similarity():
    learner = make_learner("sl", arch="tiny", num_classes=4, head="cosine")
    feats = torch.randn(3, learner.visual.output_dim)
    expected = F.normalize(feats, dim=-1) @ F.normalize(learner.head.weight, dim=-1).T / 0.07  # the paper's init
    assert torch.allclose(learner.head(feats), expected, atol=1e-5)
    assert torch.allclose(learner.head(feats, torch.tensor([3, 1])), expected[:, [3, 1]], atol=1e-5)


def test_logit_scales_start_at_one_over_0_07_and_never_exceed_100():
    learner = make_learner("sl", arch="tiny", num_classes=4)  # the default head is the paper's cosine head
    feats = torch.randn(3, learner.visual.output_dim)
    with torch.no_grad():
        learner.head.logit_scale.fill_(math.log(1000.0))  # a learned scale past the cap
    cos = F.normalize(feats, dim=-1) @ F.normalize(learner.head.weight, dim=-1).T
    assert torch.allclose(learner.head(feats), cos * 100.0, atol=1e-4)
    clip = make_learner("clip", arch="tiny", num_classes=4)
    with torch.no_grad():
        clip.model.logit_scale.fill_(math.log(1000.0))
    b = batch()
    b["tokens"] = clip.tokenize([f"a photo {i}" for i in range(len(b["labels"]))])
    out = clip.model(b["images"], b["tokens"])
    capped = clip.loss_fn(out["image_features"], out["text_features"], torch.tensor(100.0))
    assert clip.loss(b, torch.Generator()).item() == pytest.approx(capped.item(), rel=1e-5)


def test_batch_logit_adjust_is_cross_entropy_over_present_classes_plus_log_counts():
    torch.manual_seed(0)
    learner = make_learner("sl_batch_logit_adjust", arch="tiny", num_classes=6)
    b = batch()
    feats = learner.image_features(b["images"])
    full = learner.head(feats).detach().double()
    present, counts = [0, 2, 5], {0: 1, 2: 2, 5: 3}
    by_hand = 0.0
    for i, label in enumerate(b["labels"].tolist()):
        z = {c: float(full[i, c]) + math.log(counts[c]) for c in present}
        by_hand += math.log(sum(math.exp(v) for v in z.values())) - z[label]
    assert learner.loss(b, torch.Generator()).item() == pytest.approx(by_hand / len(b["labels"]), rel=1e-5)


def test_frozen_text_head_uses_fixed_minilm_embeddings_of_a_name():
    from sentence_transformers import SentenceTransformer

    from tailstudy.models.towers import minilm_path

    names = ["tench", "goldfish", "great white shark"]
    learner = make_learner("sl_frozen_text_head", arch="tiny", num_classes=3, class_names=names)
    expected = SentenceTransformer(minilm_path(), device="cpu").encode([f"a {n}" for n in names],
                                                                       normalize_embeddings=True)
    emb = learner.head.class_embeddings
    assert torch.allclose(emb, torch.from_numpy(expected), atol=1e-5)
    assert "head.class_embeddings" not in dict(learner.named_parameters())  # a buffer: never trained
    # synonyms land closer than unrelated classes: the embeddings carry meaning
    assert (emb[1] @ emb[0]) < 0.9


def test_clip_with_a_frozen_minilm_text_tower_trains_only_the_projection(tmp_path):
    from helpers.tiny_shards import shard_data
    from tailstudy.spec import TrainSpec
    from tailstudy.train import train

    data = shard_data(tmp_path / "shards", torch.randint(0, 255, (16, 32, 32, 3), dtype=torch.uint8).numpy(),
                      [0, 1] * 8, ["a tench", "a goldfish"] * 8)
    learner0 = make_learner("clip", arch="tiny", num_classes=2, text_tower="minilm_frozen")
    before = {k: v.clone() for k, v in learner0.model.text.state_dict().items()}
    cfg = TrainSpec(arch="tiny", epochs=1, batch_size=8, device="cpu", text_tower="minilm_frozen")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        learner, _ = train("clip", data, [8, 8], cfg, 0, Path(tmp))
    after = learner.model.text.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"proj.weight"}, changed  # seeded init: the same transformer weights, a trained projection


def test_learner_options_come_from_each_learners_declared_constructor():
    """What enters a learner's training key, derived from its constructor (text_head: which language a frozen text
    head is made of, where the learner can have one)."""
    from tailstudy.models import COMMON_OPTIONS, learner_options

    before = {"clip": {"text_tower"}, "sl": {"head", "text_head"},
              "sl_sampled_vocab": {"head", "num_to_sample", "vocab_weights", "vocab_chunk", "text_head"},
              "sl_frozen_text_head": {"text_head"}, "sl_batch_logit_adjust": {"head", "text_head"},
              # the paper's Fig. 9 learner (its head is always the frozen text head, so not an option)
              "sl_sampled_vocab_frozen_text": {"num_to_sample", "vocab_weights", "vocab_chunk", "text_head"}}
    assert {name: set(learner_options(name)) - set(COMMON_OPTIONS) for name in known_learners()} == before
    assert [name for name in known_learners() if reads_captions(name)] == ["clip"]


def test_an_option_a_learner_does_not_declare_is_an_error():
    with pytest.raises(TypeError, match="learner 'sl' has no option 'text_tower'"):
        make_learner("sl", arch="tiny", num_classes=3, text_tower="scratch")
    make_learner("sl", arch="tiny", num_classes=3, class_names=["a", "b", "c"])  # context it ignores is fine
