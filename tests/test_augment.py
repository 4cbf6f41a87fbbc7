"""tailstudy.augment: the replica of open_clip's training crop returns exactly torchvision's images for the same seed
(sizes, aspect ratios and modes that exercise retries, the central-crop fallback, no-resize crops and RGB conversion),
and the streamed batches use it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from tailstudy.augment import Draws, FastRandomResizedCrop, fast_train_transform, uniform_bounds
from tailstudy.data import open_clip_transform, split_transform

CFG = {"size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "interpolation": "bicubic",
       "resize_mode": "shortest"}


def images(rng: np.random.Generator) -> list[Image.Image]:
    shapes = [(32, 32), (40, 24), (24, 40), (33, 32), (200, 20), (20, 200), (64, 48), (7, 9), (31, 32)]
    out = []
    for k, (w, h) in enumerate(shapes * 3):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(pixels)
        out.append([img, img.convert("L"), img.convert("RGBA"), img.convert("P")][k % 4])
    return out


@pytest.mark.parametrize("scale,ratio,size", [((0.9, 1.0), (3 / 4, 4 / 3), 32), ((0.08, 1.0), (3 / 4, 4 / 3), 24),
                                              ((0.5, 1.0), (0.2, 5.0), (20, 28))])
def test_replica_matches_torchvision_for_every_seed(scale, ratio, size):
    crop = T.RandomResizedCrop(size, scale=scale, ratio=ratio, interpolation=T.InterpolationMode.BICUBIC)
    reference = T.Compose([crop, lambda img: img.convert("RGB")])
    fast = FastRandomResizedCrop(crop)
    pics = images(np.random.default_rng(0))
    for seed in range(40):
        torch.manual_seed(seed)
        expected = [np.asarray(reference(img)) for img in pics]
        raw = fast.draws(torch.Generator().manual_seed(seed), len(pics))
        got = [np.asarray(fast(img, raw)) for img in pics]
        assert all(e.shape == g.shape and np.array_equal(e, g) for e, g in zip(expected, got)), seed


def test_draws_reproduce_torch_draws():
    g = torch.Generator().manual_seed(5)
    expected = []
    for _ in range(300):  # mixed as get_params mixes them
        expected += [torch.empty(1).uniform_(0.9, 1.0, generator=g).item(),
                     torch.randint(0, 7, (1,), generator=g).item()]
    raw = Draws.for_batch(torch.Generator().manual_seed(5), 300, uniform_bounds(-0.3, 0.3))
    bounds = uniform_bounds(0.9, 1.0)
    assert [v for _ in range(300) for v in (raw.uniform(bounds), raw.randint(7))] == expected


def test_aspect_ratio_draws_are_torchs_one_element_exp():
    """The batch's exp values (computed at once) equal get_params' exp of each one-element uniform draw."""
    log_ratio = torch.log(torch.tensor((3 / 4, 4 / 3))).tolist()
    g = torch.Generator().manual_seed(11)
    expected = [torch.exp(torch.empty(1).uniform_(*log_ratio, generator=g)).item() for _ in range(20000)]
    raw = Draws.for_batch(torch.Generator().manual_seed(11), 20000 // 22 + 1, uniform_bounds(*log_ratio))
    assert [raw.exp_uniform() for _ in range(20000)] == expected


def test_streamed_batches_use_the_replica_only_for_open_clips_train_transform():
    per_image, per_batch = split_transform(open_clip_transform(CFG, True))
    assert isinstance(per_image, FastRandomResizedCrop) and type(per_batch).__name__ == "BatchNormalize"
    assert not isinstance(split_transform(open_clip_transform(CFG, False))[0], FastRandomResizedCrop)
    jitter = T.Compose([T.RandomResizedCrop(32), T.ColorJitter(0.1)])
    assert fast_train_transform(list(jitter.transforms)) is None


def test_memos_give_the_same_batches_within_their_budget(tmp_path):
    """Decoded images and token rows kept from epoch to epoch (bounded) change no batch."""
    import open_clip

    from tailstudy.corpus.shards import ShardWriter, encode_png
    from tailstudy.data import BatchStream, build_index, make_loader
    from tailstudy.memo import TokenMemo

    rng = np.random.default_rng(1)
    wanted = {}
    with ShardWriter(tmp_path / "s.tar") as w:
        for i in range(40):
            w.add(f"k{i:03d}", {"png": encode_png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))})
            wanted[f"k{i:03d}"] = [(i % 3, f"a photo of thing {i % 7}")]
    index = build_index([tmp_path / "s.tar"], wanted, tmp_path, with_captions=True)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=16)

    def epochs(memo: bool, budget: int | None = None) -> list[dict]:
        stream = BatchStream(index, open_clip_transform(CFG, True), 8, 3, 0, True, tokenizer, memo=memo)
        if budget is not None:
            stream.images.max_bytes = budget
        loader = make_loader(stream, 0)
        out = [b for _ in range(2) for b in loader]
        if memo:
            assert stream.images.bytes <= stream.images.max_bytes
        return out

    plain = epochs(False)
    for got in (epochs(True), epochs(True, budget=10 * 32 * 32 * 4)):
        for a, b in zip(plain, got, strict=True):
            assert torch.equal(a["images"], b["images"]) and a["images"].stride() == b["images"].stride()
            assert torch.equal(a["tokens"], b["tokens"]) and a["tokens"].dtype == b["tokens"].dtype
    small = TokenMemo(tokenizer, max_bytes=3 * 16 * 8)
    texts = [f"caption {i % 5}" for i in range(12)]
    assert torch.equal(small(texts), tokenizer(texts)) and torch.equal(small(texts), tokenizer(texts))
    assert len(small.rows) == 3


def test_a_streamed_batch_is_open_clips_transform_of_each_image(tmp_path):
    """End to end: the batch equals torch.stack of open_clip's own training transform applied image by image, under
    the batch's seed (values and memory layout), with the memo on and off."""
    import io

    from tailstudy.corpus.shards import ShardWriter, encode_png
    from tailstudy.data import BatchStream, build_index
    from tailstudy.workers import Reader

    rng = np.random.default_rng(2)
    with ShardWriter(tmp_path / "s.tar") as w:
        for i in range(12):
            side = (32, 40, 24)[i % 3]
            w.add(f"k{i:02d}", {"png": encode_png(rng.integers(0, 256, (side, 32, 3), dtype=np.uint8))})
    index = build_index([tmp_path / "s.tar"], {f"k{i:02d}": [(0, "")] for i in range(12)}, tmp_path, False)
    transform = open_clip_transform(CFG, True)
    items = np.array([3, 0, 7, 11, 5])
    reader = Reader(index.shards)
    for memo in (False, True):
        stream = BatchStream(index, transform, 5, memo=memo)
        for _ in range(2):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(17)
                got = stream.batch(items, reader)["images"]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(17)
                expected = torch.stack([transform(Image.open(io.BytesIO(reader.read(
                    int(index.shard[i]), int(index.offset[i]), int(index.size[i]))))) for i in items])
            assert torch.equal(got, expected)
    reader.close()
