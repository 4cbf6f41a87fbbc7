"""Frozen heads (language vs random prototypes), the teacher CLIP behind `text_head: clip`, open_clip's weight-decay
rule, the CPU thread budget and the caption prompt CLIP is also scored with."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tailstudy.models import make_learner


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def test_a_frozen_random_head_is_fixed_seeded_and_well_spread():
    torch.manual_seed(3)
    a = make_learner("sl_sampled_vocab", arch="tiny", num_classes=50, head="frozen_random")
    torch.manual_seed(3)
    b = make_learner("sl_sampled_vocab", arch="tiny", num_classes=50, head="frozen_random")
    emb = a.head.class_embeddings
    assert torch.equal(emb, b.head.class_embeddings) and "head.class_embeddings" not in dict(a.named_parameters())
    assert torch.allclose(emb.norm(dim=1), torch.ones(50))
    off = (emb @ emb.T)[~torch.eye(50, dtype=torch.bool)]
    assert off.abs().max() < 0.7  # random directions in 64 dims: nearly orthogonal, none shared


def test_given_head_embeddings_are_the_frozen_heads_class_weights():
    given = torch.randn(4, 16)
    learner = make_learner("sl_sampled_vocab_frozen_text", arch="tiny", num_classes=4, text_head="clip",
                           head_embeddings=given)
    assert torch.allclose(learner.head.class_embeddings, F.normalize(given, dim=-1))
    assert learner.head.proj.weight.shape == (16, learner.visual.output_dim)


def test_weight_decay_follows_open_clip_weights_only():
    from tailstudy.spec import TrainSpec
    from tailstudy.train import _optimizer, decays

    learner = make_learner("clip", arch="tiny", num_classes=3)
    named = dict(learner.named_parameters())
    assert not decays("model.logit_scale", named["model.logit_scale"])
    assert all(not decays(n, p) for n, p in named.items() if p.ndim < 2 or n.endswith("bias"))
    assert decays("model.token_embedding.weight", named["model.token_embedding.weight"])
    opt, _ = _optimizer(learner, TrainSpec(weight_decay=0.2), 10, 1)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.2 and plain["weight_decay"] == 0.0
    assert sum(p.numel() for p in decayed["params"]) + sum(p.numel() for p in plain["params"]) == \
        sum(p.numel() for p in learner.parameters())
    # a step with no gradient signal leaves the scale where it was (decay would pull it toward 0)
    scale = learner.model.logit_scale.detach().clone()
    for p in learner.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(learner.model.logit_scale.detach(), scale)


def test_each_process_gets_its_share_of_the_cores(monkeypatch):
    from tailstudy import train
    from tailstudy.spec import TrainSpec

    for cores, jobs, expected in ((2, 1, (2, 1)), (8, 1, (4, 1)), (16, 1, (4, 3)), (1, 1, (1, 1)), (16, 4, (4, 2))):
        monkeypatch.setattr(train, "usable_cores", lambda cores=cores: cores)
        assert train.cpu_plan(TrainSpec(), jobs) == expected
    monkeypatch.setattr(train, "usable_cores", lambda: 16)
    assert train.cpu_plan(TrainSpec(parallel=2, threads=5)) == (2, 5)


@pytest.mark.parametrize("caption, prefix, prompt", [
    ("full", True, "{}."), ("title+tags", True, "{}."), ("full", False, "{}"), ("full_unprefixed", True, "{}"),
    ("full", "where_missing", "{}"), ("title", "where_missing", "{}"),
    ("templates", True, "templates"), ("a_cname", True, "a {}"), ("cname", True, "{}")])
def test_the_caption_prompt_is_what_the_levels_captions_wrap_each_name_in(caption, prefix, prompt):
    from tailstudy.variants import caption_prompt, caption_variant, prompt_templates

    assert caption_prompt(caption, prefix) == prompt
    if prompt == "templates":  # template captions are the templates themselves
        return
    fields = {"title": "", "tags": "", "description": ""}
    made = caption_variant(caption, "tabby cat", fields, "", prefix)
    if made:  # where a level's captions start with the name, the prompt is their start
        assert prompt_templates(prompt)[0]("tabby cat").rstrip(".") == made
    elif prompt == "{}":  # unprefixed web captions may name the class anywhere, or not at all: the bare name
        assert made == ""


def test_clip_is_also_scored_with_its_captions_prompt_and_supervised_runs_are_not():
    from tailstudy.evaluate import evaluate_learner

    torch.manual_seed(0)
    images = torch.randint(0, 255, (12, 32, 32, 3), dtype=torch.uint8)
    pixels = (images.permute(0, 3, 1, 2).float() / 127.5) - 1

    @torch.no_grad()
    def predict(learner, images, class_names, prompts, device, classes=None):  # images in memory, for this test
        return learner.class_logits(pixels, classes).numpy(), learner.image_features(pixels).numpy()

    concepts = np.array([10, 20, 30] * 4)
    names = {10: "tench", 20: "goldfish", 30: "tiger shark"}
    common = dict(images=images, concepts=concepts, eval_ids=[10, 20, 30], learner_ids=[10, 20, 30],
                  counts=[5, 3, 1], corpus_freq={10: 5, 20: 3, 30: 1}, names=names, prompts="templates",
                  device=torch.device("cpu"), predictor=predict)
    clip = make_learner("clip", arch="tiny", num_classes=3)
    _, metrics = evaluate_learner(clip, caption_prompt="{}.", **common)
    own = clip.class_text_features([[f"{n}."] for n in names.values()])
    with torch.no_grad():
        feats = clip.image_features(pixels)
    expected = ((F.normalize(feats, dim=-1) @ own.T).argmax(1).numpy() == np.arange(12) % 3).mean()
    assert metrics["top1_caption_prompt"] == pytest.approx(expected)
    sl = make_learner("sl", arch="tiny", num_classes=3)
    assert np.isnan(evaluate_learner(sl, caption_prompt="{}.", **common)[1]["top1_caption_prompt"])
