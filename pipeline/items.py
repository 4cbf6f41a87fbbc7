"""Training items and evaluation images as references into webdataset shards, and the order an epoch reads them in.

Nothing here holds an image: an *item index* (per kept sample copy: shard, byte offset and size of its image, label,
caption) is built from the shards' member indexes, recorded when the corpus was written (`tailstudy.corpus.shards`),
and the subset manifest. The rule that keeps runs deterministic: an epoch's sample order is a pure function of
(index, seed, epoch) — shards in a seeded order, items through a seeded shuffle buffer — and batch b of it is
augmented under the seed (seed, epoch, b).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow.parquet as pq

from tailstudy.corpus.shards import image_members
from tailstudy.errors import InputError

SHUFFLE_BUFFER = 4096  # items (references, a few bytes each), not images


@dataclass(frozen=True)
class ItemIndex:
    """One row per training item (a sample copy) or evaluation image, in stream order (shard, member, copy)."""

    shards: tuple[str, ...]
    shard: np.ndarray  # int32, position in `shards`
    offset: np.ndarray  # int64, byte offset of the image in its tar
    size: np.ndarray  # int64
    label: np.ndarray  # int64, class index or -1 (open-world)
    caption: Optional[list[str]] = None

    def __len__(self) -> int:
        return len(self.label)

    def take(self, rows: np.ndarray) -> "ItemIndex":
        caption = [self.caption[i] for i in rows.tolist()] if self.caption is not None else None
        return replace(self, shard=self.shard[rows], offset=self.offset[rows], size=self.size[rows],
                       label=self.label[rows], caption=caption)


def locate_items(shard_paths: list[Path], wanted: dict[str, list[tuple[int, str]]], where: Path,
                 with_captions: bool) -> ItemIndex:
    """Items of the `wanted` shard keys (key -> [(label, caption) per copy]) from the shards' member indexes."""
    cols: dict[str, list] = {"shard": [], "offset": [], "size": [], "label": []}
    captions: list[str] = []
    found: set[str] = set()
    for s, path in enumerate(shard_paths):
        for key, _ext, offset, size in image_members(path):
            copies = wanted.get(key)
            if copies is None or key in found:
                continue
            found.add(key)
            for label, caption in copies:
                for col, value in zip(cols, (s, offset, size, label)):
                    cols[col].append(value)
                captions.append(caption)
    missing = len(wanted) - len(found)
    if missing:
        example = next(k for k in wanted if k not in found)
        raise InputError(f"{where}: {missing} samples have no image in the shards (e.g. {example})")
    dtypes = {"shard": np.int32, "offset": np.int64, "size": np.int64, "label": np.int64}
    return ItemIndex(tuple(str(p) for p in shard_paths), **{c: np.asarray(v, dtypes[c]) for c, v in cols.items()},
                     caption=captions if with_captions else None)


def subset_index(corpus_dir: Path, subset_dir: Path, class_ids: list[int]) -> ItemIndex:
    """The subset manifest's items (sample_id, copy -> one item each; the manifest's label and caption)."""
    manifest = pq.read_table(subset_dir / "subset.parquet", columns=["sample_id", "copy", "label", "caption"])
    manifest = manifest.sort_by([("sample_id", "ascending"), ("copy", "ascending")])
    ids = set(manifest.column("sample_id").to_pylist())
    rows = pq.read_table(corpus_dir / "captions.parquet", columns=["sample_id", "shard", "key"])
    key_of, shards = {}, set()
    for sid, shard, key in zip(*(rows.column(c).to_pylist() for c in ("sample_id", "shard", "key"))):
        if sid in ids:
            key_of[sid] = key
            shards.add(shard)
    del rows, ids
    index_of = {cid: i for i, cid in enumerate(class_ids)}
    wanted: dict[str, list[tuple[int, str]]] = {}
    for sid, label, caption in zip(manifest.column("sample_id").to_pylist(), manifest.column("label").to_pylist(),
                                   manifest.column("caption").to_pylist()):
        if sid not in key_of:
            raise InputError(f"{subset_dir / 'subset.parquet'}: sample {sid} is not in {corpus_dir / 'captions.parquet'}")
        wanted.setdefault(key_of[sid], []).append((index_of[label] if label is not None else -1, caption))
    return locate_items([corpus_dir / "shards" / s for s in sorted(shards)], wanted, corpus_dir, with_captions=True)


def target_concepts(corpus_dir: Path) -> list[int]:
    """The synthetic world's targets, or what a real corpus's `targets` rule resolved to when its corpus was built
    (default: the whole vocabulary)."""
    name = "world.json" if (corpus_dir / "world.json").is_file() else "targets.json"
    return sorted(json.loads((corpus_dir / name).read_text())["targets"])


def eval_index(corpus_dir: Path, class_ids: list[int]) -> ItemIndex:
    """The evaluation images of the given classes, labelled by class index, in shard order."""
    table = pq.read_table(corpus_dir / "eval.parquet", columns=["concept_id", "shard", "key"]).to_pandas()
    index_of = {cid: i for i, cid in enumerate(class_ids)}
    table = table[table.concept_id.isin(index_of)]
    wanted = {k: [(index_of[c], "")] for k, c in zip(table.key, table.concept_id)}
    return locate_items([corpus_dir / "shards" / s for s in sorted(table.shard.unique())], wanted, corpus_dir, False)


def epoch_order(index: ItemIndex, seed: int, epoch: int, buffer: int = SHUFFLE_BUFFER) -> np.ndarray:
    """Item order of one epoch: the shards in a seeded order, their items through a seeded shuffle buffer."""
    rng = np.random.default_rng([seed, epoch, 7])
    position = np.empty(len(index.shards), np.int64)
    position[rng.permutation(len(index.shards))] = np.arange(len(index.shards))
    stream = np.argsort(position[index.shard], kind="stable")
    n, k = len(stream), min(buffer, len(stream))
    if k <= 1:
        return stream
    order = np.empty(n, np.int64)
    held = stream[:k].copy()
    picks = rng.integers(0, k, size=n - k)
    for t, item in enumerate(stream[k:].tolist()):  # the buffer is always full here: emit a random slot, refill it
        order[t] = held[picks[t]]
        held[picks[t]] = item
    order[n - k:] = held[rng.permutation(k)]
    return order


def num_batches(n: int, batch_size: int, train: bool = True) -> int:
    """Batches of an epoch. Training skips a last batch of one sample (BatchNorm cannot train on it; the order changes
    every epoch, so it is a different sample each time)."""
    batches = math.ceil(n / batch_size)
    return batches - 1 if train and batches > 1 and n % batch_size == 1 else batches


def item_seed(seed: int, epoch: int, part: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{epoch}/{part}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2 ** 63 - 1)
