"""Tests train on real shards, as studies do: images written as PNG into webdataset shards (with their member
indexes) and read back through the one data path (`tailstudy.data`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tailstudy.corpus.shards import ShardWriter, encode_png
from tailstudy.data import ShardData
from tailstudy.items import locate_items


def shard_data(root: Path, images, labels, captions: list[str], per_shard: int = 50) -> ShardData:
    """uint8 images (N, H, W, 3), labels (N,; -1: open-world) and captions -> shards in `root` -> a training set
    of one item per image."""
    images, labels = np.asarray(images, np.uint8), np.asarray(labels).tolist()
    root.mkdir(parents=True, exist_ok=True)
    wanted = {}
    for start in range(0, len(images), per_shard):
        with ShardWriter(root / f"train-{start // per_shard:05d}.tar") as w:
            for i in range(start, min(start + per_shard, len(images))):
                w.add(f"s{i:06d}", {"png": encode_png(images[i]), "txt": captions[i].encode()})
                wanted[f"s{i:06d}"] = [(labels[i], captions[i])]
    return ShardData(locate_items(sorted(root.glob("*.tar")), wanted, root, with_captions=True))
