"""Exact, faster replicas of open_clip's per-image training transform (a speed option with no effect on results).

open_clip's training transform for a PIL image is RandomResizedCrop -> convert("RGB") (-> to-tensor -> Normalize,
which `tailstudy.data` applies per batch). torchvision's ``RandomResizedCrop.get_params`` spends most of its time on
one-element tensors (two ``uniform_``, an ``exp`` and two ``randint`` per attempt). The replica draws the same
generator's raw 32-bit outputs in chunks and applies the same arithmetic to them (float32 uniforms from the low 24 bits,
``randint`` as output mod range), calls torch's own one-element ``exp`` on the same float32 value, and crops and resizes
with the same PIL calls, so it returns the same images for the same seed (checked against torchvision in the tests).
A transform with any other step keeps the generic path.
"""
from __future__ import annotations

import math
import struct
from typing import Callable

import numpy as np
import torch
from PIL import Image

CHUNK = 512  # raw outputs drawn per refill (a batch of 256 crops uses ~1,400)
_F32 = struct.Struct("f")


def f32(x: float) -> float:
    """x rounded to float32 (round to nearest even, as a C float cast), back as a Python float."""
    return _F32.unpack(_F32.pack(x))[0]


class RawStream:
    """Consecutive 32-bit outputs of a torch CPU generator's mt19937, drawn in chunks: a full-range int64 ``random_``
    is one ``random64()`` = (first output << 32) | second output. Over-drawing only advances the generator (the caller
    discards its state afterwards, as `tailstudy.data` does with ``fork_rng``)."""

    def __init__(self, generator: torch.Generator):
        self.generator, self.buffer, self.pos = generator, [], 0

    def next(self) -> int:
        if self.pos == len(self.buffer):
            pairs = torch.empty(CHUNK // 2, dtype=torch.int64).random_(-2 ** 63, None, generator=self.generator)
            both = pairs.numpy().view(np.uint64)
            out = np.empty(CHUNK, np.uint64)
            out[0::2], out[1::2] = both >> np.uint64(32), both & np.uint64(0xFFFFFFFF)
            self.buffer, self.pos = out.tolist(), 0
        self.pos += 1
        return self.buffer[self.pos - 1]

    def uniform(self, bounds: tuple[float, float]) -> float:
        """``torch.empty(1).uniform_(lo, hi).item()`` on a float32 tensor, bounds = `uniform_bounds(lo, hi)`:
        (24 random bits / 2^24) * (to - from) + from, the product exact in double, rounded once to float32."""
        return f32((self.next() & 0xFFFFFF) * 2.0 ** -24 * bounds[1] + bounds[0])

    def randint(self, high: int) -> int:
        """``torch.randint(0, high, (1,)).item()``: one output mod high (torch draws 64 bits from 2^31 on; no image
        side comes near that)."""
        if high >= 2 ** 31:
            raise ValueError(f"randint range {high} is beyond the replica")
        return self.next() % high


def uniform_bounds(lo: float, hi: float) -> tuple[float, float]:
    """(from, to - from) as the float32 kernel sees them (both bounds cast to float32, the difference in float32)."""
    lo32, hi32 = f32(lo), f32(hi)
    return lo32, f32(hi32 - lo32)


class FastRandomResizedCrop:
    """torchvision's RandomResizedCrop (PIL input), then convert("RGB") when needed, drawing from a `RawStream`."""

    def __init__(self, crop):
        self.size, self.scale, self.ratio = tuple(crop.size), crop.scale, crop.ratio
        from torchvision.transforms.functional import pil_modes_mapping

        self.resample = pil_modes_mapping[crop.interpolation]
        log_ratio = torch.log(torch.tensor(self.ratio)).tolist()  # as get_params computes it
        self.scale_bounds, self.ratio_bounds = uniform_bounds(*self.scale), uniform_bounds(*log_ratio)
        self._exp = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_exp": None}  # a pickled tensor and its numpy view would no longer share memory

    def exp32(self, x: float) -> float:
        """torch's own float32 exp of a one-element tensor, as get_params calls it (x is a float32 value)."""
        if self._exp is None:
            tensor = torch.empty(1)
            self._exp = (tensor, tensor.numpy())
        tensor, view = self._exp
        view[0] = x
        tensor.exp_()
        return float(view[0])

    def params(self, width: int, height: int, raw: RawStream) -> tuple[int, int, int, int]:
        """get_params(img, scale, ratio) -> (i, j, h, w), same draws, same arithmetic."""
        area = height * width
        for _ in range(10):
            target_area = area * raw.uniform(self.scale_bounds)
            aspect_ratio = self.exp32(raw.uniform(self.ratio_bounds))
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                i = raw.randint(height - h + 1)
                return i, raw.randint(width - w + 1), h, w
        in_ratio = float(width) / float(height)  # fallback: central crop
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            h, w = height, int(round(height * max(self.ratio)))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Image.Image, raw: RawStream) -> Image.Image:
        i, j, h, w = self.params(img.width, img.height, raw)
        img = img.crop((j, i, j + w, i + h))
        if (h, w) != self.size:  # torchvision's resize returns the crop itself when it already has the size
            img = img.resize(self.size[::-1], self.resample)
        return img.convert("RGB") if img.mode != "RGB" else img


def to_rgb(img: Image.Image) -> Image.Image:
    return img.convert("RGB") if img.mode != "RGB" else img


class BatchNormalize:
    """torchvision's ``Normalize`` (not in place) on a float batch (N, C, H, W): clone, subtract the float32 mean,
    divide by the float32 std, per channel — the same operations, so the same values; a class of this module, so
    that data workers unpickling it need not import torchvision or open_clip."""

    def __init__(self, mean, std):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=batch.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=batch.dtype).view(-1, 1, 1)
        return batch.clone().sub_(mean).div_(std)


def fast_train_transform(steps: list) -> Callable | None:
    """The replica for per-image steps [RandomResizedCrop, (Maybe)ConvertMode to RGB]; None for anything else."""
    names = [type(s).__name__ for s in steps]
    if names[:1] != ["RandomResizedCrop"] or not all(n == "MaybeConvertMode" for n in names[1:]):
        return None
    if any(getattr(s, "mode", "RGB") != "RGB" for s in steps[1:]):
        return None
    return FastRandomResizedCrop(steps[0])
