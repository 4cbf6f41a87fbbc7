"""tailstudy.augment: the replica of open_clip's training crop returns exactly torchvision's images for the same seed
(sizes, aspect ratios and modes that exercise retries, the central-crop fallback, no-resize crops and RGB conversion),
and the streamed batches use it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from tailstudy.augment import FastRandomResizedCrop, RawStream, fast_train_transform, uniform_bounds
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
        raw = RawStream(torch.Generator().manual_seed(seed))
        got = [np.asarray(fast(img, raw)) for img in pics]
        assert all(e.shape == g.shape and np.array_equal(e, g) for e, g in zip(expected, got)), seed


def test_raw_stream_reproduces_torch_draws():
    g = torch.Generator().manual_seed(5)
    expected = []
    for _ in range(300):  # more than a chunk, mixed as get_params mixes them
        expected += [torch.empty(1).uniform_(0.9, 1.0, generator=g).item(),
                     torch.randint(0, 7, (1,), generator=g).item()]
    raw = RawStream(torch.Generator().manual_seed(5))
    bounds = uniform_bounds(0.9, 1.0)
    assert [v for _ in range(300) for v in (raw.uniform(bounds), raw.randint(7))] == expected


def test_streamed_batches_use_the_replica_only_for_open_clips_train_transform():
    per_image, per_batch = split_transform(open_clip_transform(CFG, True))
    assert isinstance(per_image, FastRandomResizedCrop) and type(per_batch).__name__ == "Normalize"
    assert not isinstance(split_transform(open_clip_transform(CFG, False))[0], FastRandomResizedCrop)
    jitter = T.Compose([T.RandomResizedCrop(32), T.ColorJitter(0.1)])
    assert fast_train_transform(list(jitter.transforms)) is None
