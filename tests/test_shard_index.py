"""Shard member indexes: ShardWriter records every member's data offset and size as it writes (exactly what tarfile
reads back); shards written by other tools (pax, GNU, long names) are indexed once with tarfile; a reader fetches an
image by seeking to its recorded offset."""
from __future__ import annotations

import io
import os
import tarfile

import pyarrow.parquet as pq
import pytest

from tailstudy.corpus.shards import (ShardWriter, image_members, index_path, index_shards, iter_shard, read_members,
                                     scan_members)


def tarfile_members(path):
    """(key, ext, data offset, size) of every regular file, as tarfile reads them."""
    with tarfile.open(path, "r") as tar:
        return [(*os.path.basename(i.name).partition(".")[::2], i.offset_data, i.size) for i in tar if i.isfile()]


def write(path, fmt, names):
    with tarfile.open(path, "w", format=fmt) as tar:
        for k, name in enumerate(names):
            info = tarfile.TarInfo(name)
            data = bytes(range(256)) * (k % 5) + b"x" * k
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("dir")
        link.type = tarfile.DIRTYPE
        tar.addfile(link)


NAMES = ["a.png", "a.txt", "dir/b.jpg", "b.json", "c.PNG", "c.txt", "d.webp"]


def test_the_writer_records_what_tarfile_reads(tmp_path):
    path = tmp_path / "s.tar"
    with ShardWriter(path) as w:
        for i in range(30):  # sizes on and off the 512-byte blocks, empty members too
            w.add(f"k{i:03d}", {"png": b"p" * (i * 37), "txt": b"t" * i, "json": b"{}"})
    recorded = pq.read_table(index_path(path)).to_pylist()
    assert [tuple(r.values()) for r in recorded] == tarfile_members(path) and len(recorded) == 90
    assert index_path(path).name == "s.index.parquet"
    with open(path, "rb") as f:  # a member's bytes are where the index says
        for key, ext, offset, size in image_members(path):
            f.seek(offset)
            assert f.read(size) == b"p" * (int(key[1:]) * 37)
    assert [k for k, _ in iter_shard(path)] == [f"k{i:03d}" for i in range(30)]


def test_the_same_content_gives_the_same_index_bytes(tmp_path):
    for name in ("a.tar", "b.tar"):
        with ShardWriter(tmp_path / name) as w:
            w.add("k", {"png": b"x" * 600, "txt": b"y"})
    assert index_path(tmp_path / "a.tar").read_bytes() == index_path(tmp_path / "b.tar").read_bytes()


def test_a_failed_write_leaves_neither_shard_nor_index(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "s.tar") as w:
            w.add("k", {"png": b"x"})
            raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt,names", [
    (tarfile.USTAR_FORMAT, NAMES + ["p" * 120 + "/e.png"]),  # a ustar prefix field
    (tarfile.PAX_FORMAT, NAMES + ["é" * 60 + ".png", "f" * 150 + ".jpg"]),  # pax headers
    (tarfile.GNU_FORMAT, NAMES + ["g" * 150 + ".png"]),
])
def test_shards_of_other_writers_are_indexed_once_with_tarfile(tmp_path, fmt, names):
    path = tmp_path / "t.tar"
    write(path, fmt, names)
    assert [tuple(r.values()) for r in read_members(path).to_pylist()] == tarfile_members(path)  # no index: a scan
    assert index_shards(tmp_path) == 1 and index_shards(tmp_path) == 0  # written once, then kept
    assert [tuple(r.values()) for r in pq.read_table(index_path(path)).to_pylist()] == tarfile_members(path)
    images = [m for m in tarfile_members(path) if m[1].lower() in ("png", "jpg", "jpeg", "webp")]
    assert list(image_members(path)) == images


def test_a_tar_that_is_not_one_is_tarfiles_error(tmp_path):
    with ShardWriter(tmp_path / "l.tar", index=False) as w:
        w.add("a", {"png": b"x" * 10})
    assert not index_path(tmp_path / "l.tar").exists() and scan_members(tmp_path / "l.tar")
    data = bytearray((tmp_path / "l.tar").read_bytes())
    data[0] ^= 1  # the first header's checksum no longer matches
    (tmp_path / "l.tar").write_bytes(bytes(data))
    with pytest.raises(tarfile.ReadError):
        index_shards(tmp_path)


def test_a_generated_corpus_carries_an_index_per_shard(tmp_path):
    from tailstudy.corpus.synthetic import generate
    from tailstudy.spec import CorpusSpec, EvaluateSpec

    generate(CorpusSpec(concepts=3, open_concepts=0, samples=30, open_samples=0, profile="uniform", min_count=1),
             EvaluateSpec(per_class=1), tmp_path)
    shards = sorted((tmp_path / "shards").glob("*.tar"))
    assert [p.name for p in shards] == ["eval-00000.tar", "train-00000.tar"]
    assert index_shards(tmp_path / "shards") == 0  # nothing left to scan
    for path in shards:
        assert [tuple(r.values()) for r in pq.read_table(index_path(path)).to_pylist()] == tarfile_members(path)
