"""index_shard reads plain ustar headers itself and gives exactly tarfile's members (names, data offsets, sizes);
other tar formats (pax, GNU, long names, links) go through tarfile."""
from __future__ import annotations

import io
import os
import tarfile

import pytest

from tailstudy.corpus.shards import ShardWriter, _scan_ustar, index_shard


def tarfile_images(path):
    """(key, ext, data offset, size) of the image members, as tarfile reads them."""
    with tarfile.open(path, "r") as tar:
        members = [(os.path.basename(i.name).partition("."), i) for i in tar if i.isfile()]
    return [(key, ext, i.offset_data, i.size) for (key, _, ext), i in members
            if ext.lower() in ("png", "jpg", "jpeg", "webp")]


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


def test_ustar_shards_are_read_from_their_headers(tmp_path):
    path = tmp_path / "s.tar"
    with ShardWriter(path) as w:
        for i in range(30):
            w.add(f"k{i:03d}", {"png": b"p" * (i * 37), "txt": b"t" * i, "json": b"{}"})
    assert _scan_ustar(path) is not None
    assert list(index_shard(path)) == tarfile_images(path) and len(tarfile_images(path)) == 30


@pytest.mark.parametrize("fmt,names,fast", [
    (tarfile.USTAR_FORMAT, NAMES + ["p" * 120 + "/e.png"], True),  # a ustar prefix field
    (tarfile.PAX_FORMAT, NAMES + ["é" * 60 + ".png", "f" * 150 + ".jpg"], False),  # pax headers: tarfile reads
    (tarfile.GNU_FORMAT, NAMES + ["g" * 150 + ".png"], False),
])
def test_other_formats_give_tarfiles_members(tmp_path, fmt, names, fast):
    path = tmp_path / "t.tar"
    write(path, fmt, names)
    assert (_scan_ustar(path) is not None) == fast
    assert list(index_shard(path)) == tarfile_images(path)


def test_a_link_or_a_bad_checksum_falls_back_to_tarfile(tmp_path):
    path = tmp_path / "l.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("a.png"), io.BytesIO(b""))
        link = tarfile.TarInfo("b.png")
        link.type, link.linkname = tarfile.SYMTYPE, "a.png"
        tar.addfile(link)
    assert _scan_ustar(path) is None and list(index_shard(path)) == tarfile_images(path)
    data = bytearray((tmp_path / "l.tar").read_bytes())
    data[0] ^= 1  # the first header's checksum no longer matches: tarfile decides (here: an error)
    (tmp_path / "l.tar").write_bytes(bytes(data))
    assert _scan_ustar(path) is None
    with pytest.raises(tarfile.ReadError):
        list(index_shard(path))
