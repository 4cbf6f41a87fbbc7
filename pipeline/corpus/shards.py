"""Deterministic webdataset shards: plain tar files of ``<key>.<ext>`` members grouped by key, each with its member
index beside it.

A shard ``NAME.tar`` comes with ``NAME.index.parquet``: one row per member (key, ext, byte offset of its data, size),
recorded by `ShardWriter` as it writes the shard, so a reader fetches one image with a seek and never re-reads tar
headers. Shards written by other tools (img2dataset) are indexed once, with `tarfile`, when their artifact is built
(`index_shards`); a shard found without an index (an artifact of an older version) is read with `tarfile` too.
"""
from __future__ import annotations

import io
import os
import tarfile
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from tailstudy.store import write_parquet

INDEX_SUFFIX = ".index.parquet"
INDEX_SCHEMA = pa.schema([("key", pa.string()), ("ext", pa.string()), ("offset", pa.int64()), ("size", pa.int64())])
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")


def index_path(shard: Path) -> Path:
    """Where a shard's member index is kept: ``NAME.index.parquet`` beside ``NAME.tar``."""
    return shard.with_name(shard.name.removesuffix(".tar") + INDEX_SUFFIX)


class ShardWriter:
    """Writes one tar shard and its member index atomically; member metadata is fixed so equal content gives equal
    bytes. `index=False`: the tar alone (an export for another trainer)."""

    def __init__(self, path: Path, index: bool = True):
        self.path, self.index = path, index
        self.tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        self.tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)
        self.members: list[tuple[str, str, int, int]] = []  # (key, ext, data offset, size), in file order

    def add(self, key: str, members: dict[str, bytes]) -> None:
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            # the member's data follows its header, which starts where the archive ends now
            header = info.tobuf(self.tar.format, self.tar.encoding, self.tar.errors)
            self.members.append((key, ext, self.tar.offset + len(header), len(data)))
            self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self.tar.close()
        if self.index:  # before the shard itself appears: a shard is never there without its index
            write_parquet(members_table(self.members), index_path(self.path))
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.tar.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.abort() if exc_type else self.close()


def members_table(members: list[tuple[str, str, int, int]]) -> pa.Table:
    keys, exts, offsets, sizes = zip(*members) if members else ((), (), (), ())
    return pa.table([pa.array(keys, pa.string()), pa.array(exts, pa.string()), pa.array(offsets, pa.int64()),
                     pa.array(sizes, pa.int64())], schema=INDEX_SCHEMA)


def scan_members(path: Path) -> list[tuple[str, str, int, int]]:
    """(key, ext, data offset, size) of every regular file of a tar, read with `tarfile` (headers only)."""
    with tarfile.open(path, "r") as tar:
        return [(*_split(info.name), info.offset_data, info.size) for info in tar if info.isfile()]


def _split(name: str) -> tuple[str, str]:
    key, _, ext = os.path.basename(name).partition(".")
    return key, ext


def index_shards(shard_dir: Path) -> int:
    """Write the index of every shard in `shard_dir` that has none (shards another tool wrote, or an artifact of an
    older version hard-linked in) -> how many were indexed."""
    missing = [p for p in sorted(shard_dir.glob("*.tar")) if not index_path(p).is_file()]
    for path in missing:
        write_parquet(members_table(scan_members(path)), index_path(path))
    return len(missing)


def read_members(path: Path) -> pa.Table:
    """A shard's member index (INDEX_SCHEMA): its index file, or `tarfile`'s reading where it has none."""
    index = index_path(path)
    if index.is_file():
        return pq.read_table(index, schema=INDEX_SCHEMA)
    return members_table(scan_members(path))


def image_members(path: Path) -> Iterator[tuple[str, str, int, int]]:
    """(key, ext, byte offset, size) of every image member of a shard, in file order."""
    table = read_members(path)
    for key, ext, offset, size in zip(*(table.column(c).to_pylist() for c in INDEX_SCHEMA.names)):
        if ext.lower() in IMAGE_EXTS:
            yield key, ext, offset, size


def iter_shard(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {ext: bytes}) per sample, in file order."""
    current: str | None = None
    members: dict[str, bytes] = {}
    with tarfile.open(path, "r") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, ext = _split(info.name)
            if key != current and current is not None:
                yield current, members
                members = {}
            current = key
            members[ext] = tar.extractfile(info).read()
    if current is not None:
        yield current, members


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
