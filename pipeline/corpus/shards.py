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
    without reading the other members' data."""
    members = _scan_ustar(path)
    if members is None:  # anything but plain POSIX ustar headers: tarfile's own reading
        with tarfile.open(path, "r") as tar:
            members = [(info.name, info.offset_data, info.size) for info in tar if info.isfile()]
    for name, offset, size in members:
        key, _, ext = os.path.basename(name).partition(".")
        if ext.lower() in IMAGE_EXTS:
            yield key, ext, offset, size


_USTAR = b"ustar\x0000"
_FILE_TYPES = (b"0", b"\x00", b"7")  # tarfile's isfile(): regular, old regular, contiguous


def _scan_ustar(path: Path) -> list[tuple[str, int, int]] | None:
    """(name, data offset, size) of the regular files of a tar whose headers are all plain POSIX ustar ones (what
    ShardWriter, tarfile and webdataset write), reading only the 512-byte headers: the members tarfile's iteration
    gives, at a fraction of its cost. None at the first header it does not cover (pax or GNU headers, base-256 sizes,
    a bad checksum, a truncated file), for tarfile to read."""
    out = []
    with open(path, "rb") as f:
        fd, pos = f.fileno(), 0
        end = os.fstat(fd).st_size
        while pos + 512 <= end:
            block = os.pread(fd, 512, pos)
            if block.count(0) == 512:
                return out if pos else None  # end of archive (tarfile: an empty file is an error)
            kind, size = block[156:157], block[124:136]
            if block[257:265] != _USTAR or size[0] & 0x80 or not _checksum_ok(block):
                return None
            size = int(size.rstrip(b"\x00 ") or b"0", 8)
            name = block[:100].split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
            prefix = block[345:500].split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")
            if kind in _FILE_TYPES and not name.endswith("/"):
                out.append((f"{prefix}/{name}" if prefix else name, pos + 512, size))
            elif kind != b"5" or size:  # a directory has no data; links, devices, ...: leave them to tarfile
                return None
            pos += 512 + -(-size // 512) * 512
    return None if pos != end or not out else out


def _checksum_ok(block: bytes) -> bool:
    stored = int(block[148:156].split(b"\x00", 1)[0].strip() or b"-1", 8)
    unsigned = sum(block[:148]) + 256 + sum(block[156:])  # the checksum field itself counts as 8 spaces
    return stored == unsigned
