"""Deterministic webdataset shards: plain tar files of ``<key>.<ext>`` members grouped by key."""
from __future__ import annotations

import io
import os
import tarfile
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image


class ShardWriter:
    """Writes one tar shard atomically; member metadata is fixed so equal content gives equal bytes."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        self.tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)

    def add(self, key: str, members: dict[str, bytes]) -> None:
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self.tar.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.tar.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.abort() if exc_type else self.close()


def iter_shard(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {ext: bytes}) per sample, in file order."""
    current: str | None = None
    members: dict[str, bytes] = {}
    with tarfile.open(path, "r") as tar:
        for info in tar:
            if not info.isfile():
                continue
            base = os.path.basename(info.name)
            key, _, ext = base.partition(".")
            if key != current and current is not None:
                yield current, members
                members = {}
            current = key
            members[ext] = tar.extractfile(info).read()
    if current is not None:
        yield current, members


IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


def encode_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def decode_image(data: bytes, size: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.BICUBIC)
        return np.asarray(img, dtype=np.uint8)


def index_shard(path: Path) -> Iterator[tuple[str, str, int, int]]:
    """Yield (key, ext, byte offset, size) of every image member: what a reader needs to fetch one image with a seek,
    without reading the other members' data (tarfile seeks over them)."""
    with tarfile.open(path, "r") as tar:
        for info in tar:
            if info.isfile():
                key, _, ext = os.path.basename(info.name).partition(".")
                if ext.lower() in IMAGE_EXTS:
                    yield key, ext, info.offset_data, info.size
