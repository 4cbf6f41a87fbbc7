"""Exact, faster replicas of open_clip's per-image transforms (a speed option with no effect on results), runnable
in processes that never import torch.

open_clip's training transform for a PIL image is RandomResizedCrop -> convert("RGB") (-> to-tensor -> Normalize,
which `tailstudy.data` applies per batch); its evaluation transform is Resize (shorter side) -> CenterCrop ->
convert("RGB") (-> to-tensor -> Normalize). torchvision's ``RandomResizedCrop.get_params`` spends most of its time on
one-element tensors (two ``uniform_``, an ``exp`` and two ``randint`` per attempt). The replica takes the same
generator's raw 32-bit outputs and applies the same arithmetic to them (float32 uniforms from the low 24 bits,
``randint`` as output mod range, torch's own float32 ``exp``), and crops and resizes with the same PIL calls, so it
returns the same images for the same seed (checked against torchvision in the tests).

The draws of a batch are made where torch is (`Draws.for_batch`, in the training process): an attempt uses at most
four outputs and a crop at most ten attempts, so a batch of n images needs at most 22 n outputs, drawn at once with
the ``exp`` of each as an aspect-ratio draw; a data worker then only reads arrays. A transform with any other step
keeps the generic path.
"""
from __future__ import annotations

import math
import struct
from typing import Callable

import numpy as np
from PIL import Image

_F32 = struct.Struct("f")
ATTEMPTS = 10  # torchvision's get_params tries this many crops before its central-crop fallback
DRAWS_PER_IMAGE = 2 * ATTEMPTS + 2  # two uniforms per attempt, two randints once one fits


def f32(x: float) -> float:
    """x rounded to float32 (round to nearest even, as a C float cast), back as a Python float."""
    return _F32.unpack(_F32.pack(x))[0]


def uniform_bounds(lo: float, hi: float) -> tuple[float, float]:
    """(from, to - from) as the float32 kernel sees them (both bounds cast to float32, the difference in float32)."""
    lo32, hi32 = f32(lo), f32(hi)
    return lo32, f32(hi32 - lo32)


def raw_outputs(generator, count: int) -> np.ndarray:
    """The next `count` (even) 32-bit outputs of a torch CPU generator's mt19937: a full-range int64 ``random_`` is
    one ``random64()`` = (first output << 32) | second output. Over-drawing only advances the generator."""
    import torch

    pairs = torch.empty(count // 2, dtype=torch.int64).random_(-2 ** 63, None, generator=generator)
    both = pairs.numpy().view(np.uint64)
    out = np.empty(count, np.uint64)
    out[0::2], out[1::2] = both >> np.uint64(32), both & np.uint64(0xFFFFFFFF)
    return out


def uniforms(raw: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """`Draws.uniform` of every output at once (the same double arithmetic, one rounding to float32)."""
    return ((raw & np.uint64(0xFFFFFF)).astype(np.float64) * 2.0 ** -24 * bounds[1] + bounds[0]).astype(np.float32)


class Draws:
    """A batch's raw generator outputs, consumed in order as torchvision's one-element draws would consume them,
    with ``exp`` of each output read as an aspect-ratio draw precomputed by torch (``exp``)."""

    def __init__(self, raw: np.ndarray, ratio_exp: np.ndarray):
        self.raw, self.ratio_exp, self.pos = raw.tolist(), ratio_exp.tolist(), 0

    @classmethod
    def for_batch(cls, generator, images: int, ratio_bounds: tuple[float, float]) -> "Draws":
        import torch

        raw = raw_outputs(generator, DRAWS_PER_IMAGE * max(images, 1))
        return cls(raw, torch.from_numpy(uniforms(raw, ratio_bounds)).exp_().numpy())

    def next(self) -> int:
        self.pos += 1
        return self.raw[self.pos - 1]

    def uniform(self, bounds: tuple[float, float]) -> float:
        """``torch.empty(1).uniform_(lo, hi).item()`` on a float32 tensor, bounds = `uniform_bounds(lo, hi)`:
        (24 random bits / 2^24) * (to - from) + from, the product exact in double, rounded once to float32."""
        return f32((self.next() & 0xFFFFFF) * 2.0 ** -24 * bounds[1] + bounds[0])

    def exp_uniform(self) -> float:
        """``torch.exp(torch.empty(1).uniform_(*log_ratio)).item()`` for the bounds the batch was drawn with."""
        self.pos += 1
        return self.ratio_exp[self.pos - 1]

    def randint(self, high: int) -> int:
        """``torch.randint(0, high, (1,)).item()``: one output mod high (torch draws 64 bits from 2^31 on; no image
        side comes near that)."""
        if high >= 2 ** 31:
            raise ValueError(f"randint range {high} is beyond the replica")
        return self.next() % high


class FastRandomResizedCrop:
    """torchvision's RandomResizedCrop (PIL input), then convert("RGB") when needed, reading a batch's `Draws`."""

    def __init__(self, crop):
        import torch
        from torchvision.transforms.functional import pil_modes_mapping

        self.size, self.scale, self.ratio = tuple(crop.size), crop.scale, crop.ratio
        self.resample = pil_modes_mapping[crop.interpolation]
        log_ratio = torch.log(torch.tensor(self.ratio)).tolist()  # as get_params computes it
        self.scale_bounds, self.ratio_bounds = uniform_bounds(*self.scale), uniform_bounds(*log_ratio)

    def draws(self, generator, images: int) -> Draws:
        return Draws.for_batch(generator, images, self.ratio_bounds)

    def params(self, width: int, height: int, raw: Draws) -> tuple[int, int, int, int]:
        """get_params(img, scale, ratio) -> (i, j, h, w), same draws, same arithmetic."""
        area = height * width
        for _ in range(ATTEMPTS):
            target_area = area * raw.uniform(self.scale_bounds)
            aspect_ratio = raw.exp_uniform()
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

    def __call__(self, img: Image.Image, raw: Draws) -> Image.Image:
        i, j, h, w = self.params(img.width, img.height, raw)
        img = img.crop((j, i, j + w, i + h))
        if (h, w) != self.size:  # torchvision's resize returns the crop itself when it already has the size
            img = img.resize(self.size[::-1], self.resample)
        return to_rgb(img)


class ResizeCentreCrop:
    """torchvision's Resize (shorter side to `size`, or to (h, w)) -> CenterCrop((h, w)) -> convert("RGB") on a PIL
    image: the same output size arithmetic and the same PIL calls. Built only where the crop never pads."""

    def __init__(self, resize, crop):
        from torchvision.transforms.functional import pil_modes_mapping

        self.size, self.crop = resize.size, tuple(crop.size)
        self.resample = pil_modes_mapping[resize.interpolation]

    def resized(self, width: int, height: int) -> tuple[int, int]:
        if not isinstance(self.size, int) and len(self.size) == 2:
            return self.size[1], self.size[0]
        side = self.size if isinstance(self.size, int) else self.size[0]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = side, int(side * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = self.resized(img.width, img.height)
        if (w, h) != (img.width, img.height):
            img = img.resize((w, h), self.resample)
        ch, cw = self.crop
        top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
        return to_rgb(img.crop((left, top, left + cw, top + ch)))


def to_rgb(img: Image.Image) -> Image.Image:
    return img.convert("RGB") if img.mode != "RGB" else img


class BatchNormalize:
    """torchvision's ``Normalize`` (not in place) on a float batch (N, C, H, W): clone, subtract the float32 mean,
    divide by the float32 std, per channel — the same operations, so the same values; a class of this module, so
    that data workers unpickling it need not import torchvision or open_clip."""

    def __init__(self, mean, std):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, batch):
        import torch

        mean = torch.as_tensor(self.mean, dtype=batch.dtype, device=batch.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=batch.dtype, device=batch.device).view(-1, 1, 1)
        return batch.clone().sub_(mean).div_(std)


def fast_train_transform(steps: list) -> Callable | None:
    """The replica for per-image steps [RandomResizedCrop, (Maybe)ConvertMode to RGB]; None for anything else."""
    names = [type(s).__name__ for s in steps]
    if names[:1] != ["RandomResizedCrop"] or not all(n == "MaybeConvertMode" for n in names[1:]):
        return None
    if any(getattr(s, "mode", "RGB") != "RGB" for s in steps[1:]):
        return None
    return FastRandomResizedCrop(steps[0])


def fast_eval_transform(steps: list) -> Callable | None:
    """The replica for per-image steps [Resize, CenterCrop, (Maybe)ConvertMode to RGB] where the crop fits inside
    every resized image (open_clip's default eval transform); None for anything else."""
    names = [type(s).__name__ for s in steps]
    if names[:2] != ["Resize", "CenterCrop"] or not all(n == "MaybeConvertMode" for n in names[2:]):
        return None
    resize, crop = steps[0], steps[1]
    if any(getattr(s, "mode", "RGB") != "RGB" for s in steps[2:]) or resize.max_size is not None:
        return None
    size = [resize.size] if isinstance(resize.size, int) else list(resize.size)
    ch, cw = crop.size
    # a shorter side resized to s covers an (s, s) crop; an exact (h, w) resize covers an (h, w) crop
    fits = ch <= size[0] and cw <= size[-1]
    return ResizeCentreCrop(resize, crop) if fits else None
