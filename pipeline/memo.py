"""Bounded per-process memos of what every training epoch recomputes identically (a speed option, no effect on
results): an item's caption and stored image are the same every epoch, so its token row and its decoded image can be
kept from the first epoch. Each memo fills up to a fixed byte budget and then stops adding (no eviction), so memory
stays bounded by the budget, not by the subset; items beyond it are tokenised / decoded every epoch as before."""
from __future__ import annotations

import io
from typing import Callable

from PIL import Image

TOKEN_MEMO_BYTES = 32 * 2 ** 20
IMAGE_MEMO_BYTES = 96 * 2 ** 20  # the default study's 16,000 images at 32 px take ~64 MB (PIL keeps 4 bytes a pixel)


class TokenMemo:
    """A tokenizer (captions -> (N, context) token tensor, one row per caption, independent of the others) that
    remembers the rows of the captions it has seen, within `max_bytes`."""

    def __init__(self, tokenize: Callable, max_bytes: int = TOKEN_MEMO_BYTES):
        self.tokenize, self.max_bytes, self.bytes, self.rows = tokenize, max_bytes, 0, {}

    def __call__(self, texts: list[str]):
        import torch  # here: data workers import this module for ImageMemo and never import torch

        missing = [t for t in dict.fromkeys(texts) if t not in self.rows]
        fresh = dict(zip(missing, self.tokenize(missing))) if missing else {}
        for text, row in fresh.items():
            if self.bytes + row.nbytes > self.max_bytes:
                break
            self.rows[text] = row.clone()  # not a view: it would keep the whole batch's tensor alive
            self.bytes += row.nbytes
        return torch.stack([self.rows[t] if t in self.rows else fresh[t] for t in texts])


class ImageMemo:
    """Decoded (loaded) images by item, within `max_bytes`; `decode` returns an image the caller may transform but
    not modify in place (PIL transforms return new images)."""

    def __init__(self, max_bytes: int = IMAGE_MEMO_BYTES):
        self.max_bytes, self.bytes, self.images = max_bytes, 0, {}

    def decode(self, key: int, data: Callable[[], bytes]) -> Image.Image:
        img = self.images.get(key)
        if img is not None:
            return img
        img = decode_fresh(data())
        size = img.width * img.height * 4  # PIL's storage of RGB(A), an upper bound for L and P
        if self.bytes + size <= self.max_bytes:
            img = self.images[key] = img.copy()  # detached from the encoded bytes
            self.bytes += size
        return img


def decode_fresh(data: bytes) -> Image.Image:
    """The image of encoded bytes, loaded (its pixels decoded)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img
