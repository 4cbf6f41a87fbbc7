"""Streamed training and evaluation data: webdataset tar shards -> DataLoader worker processes -> batches.

Nothing holds the images of a subset: an *item index* (per kept sample copy: shard, byte offset and size of its image,
label, caption) is built from the tar headers and the subset manifest, and each batch is read, decoded and transformed
when it is needed, with open_clip's own transforms for the model (RandomResizedCrop for training, resize + centre crop
for evaluation, the model's mean/std).

The rule that keeps runs deterministic: an epoch's sample order is a pure function of (index, seed, epoch) — shards in a
seeded order, items through a seeded shuffle buffer — and batch b of that order is built by data worker b mod W, its
images augmented under the seed (seed, epoch, b). The DataLoader hands batches back round-robin, i.e. in order, so
the batches, and the weights trained on them, are the same for any number of workers (a pure speed option). Reads stay
near-sequential: a batch spans at most the shuffle buffer's window of the stream.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tailstudy.augment import BatchNormalize, FastRandomResizedCrop, RawStream, fast_train_transform, to_rgb
from tailstudy.corpus.shards import index_shard
from tailstudy.errors import InputError
from tailstudy.memo import ImageMemo, TokenMemo, decode_fresh

SHUFFLE_BUFFER = 4096  # items (references, a few bytes each), not images
SMALL_IMAGE = 64  # model inputs up to this size decode faster than a worker process starts: no workers by default


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


def build_index(shard_paths: list[Path], wanted: dict[str, list[tuple[int, str]]], where: Path,
                with_captions: bool) -> ItemIndex:
    """Items of the `wanted` shard keys (key -> [(label, caption) per copy]) from the tar headers of the shards."""
    cols: dict[str, list] = {"shard": [], "offset": [], "size": [], "label": []}
    captions: list[str] = []
    found: set[str] = set()
    for s, path in enumerate(shard_paths):
        for key, _ext, offset, size in index_shard(path):
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
    import pyarrow.parquet as pq  # here, not at the top: data workers import this module and never read parquet

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
    return build_index([corpus_dir / "shards" / s for s in sorted(shards)], wanted, corpus_dir, with_captions=True)


def eval_index(corpus_dir: Path, class_ids: list[int]) -> ItemIndex:
    """The evaluation images of the given classes, labelled by class index, in shard order."""
    import pyarrow.parquet as pq

    table = pq.read_table(corpus_dir / "eval.parquet", columns=["concept_id", "shard", "key"]).to_pandas()
    index_of = {cid: i for i, cid in enumerate(class_ids)}
    table = table[table.concept_id.isin(index_of)]
    wanted = {k: [(index_of[c], "")] for k, c in zip(table.key, table.concept_id)}
    return build_index([corpus_dir / "shards" / s for s in sorted(table.shard.unique())], wanted, corpus_dir, False)


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


class _Reader:
    """Open shard files, read by (offset, size)."""

    def __init__(self, shards: tuple[str, ...]):
        self.shards, self.files = shards, {}

    def read(self, shard: int, offset: int, size: int) -> bytes:
        f = self.files.get(shard)
        if f is None:
            f = self.files[shard] = open(self.shards[shard], "rb")
        f.seek(offset)
        return f.read(size)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class BatchStream(IterableDataset):
    """Batches of one epoch (see the module's rule). `tokenize`: captions -> token tensor (text learners only).
    `memo`: keep decoded images and token rows from epoch to epoch (`tailstudy.memo`, bounded; small images)."""

    def __init__(self, index: ItemIndex, transform: Callable, batch_size: int, seed: int = 0, epoch: int = 0,
                 shuffle: bool = True, tokenize: Callable | None = None, rank: int = 0, world: int = 1,
                 memo: bool = False, captions: bool = False):
        self.index, self.batch_size = index, batch_size
        # split once, here: workers unpickle only these parts (no open_clip import for the transforms)
        self.per_image, self.per_batch = split_transform(portable_transform(transform))
        self.seed, self.epoch, self.shuffle, self.tokenize = seed, epoch, shuffle, tokenize
        self.rank, self.world, self.captions = rank, world, captions
        self.images = ImageMemo() if memo else None
        if memo and tokenize is not None:
            self.tokenize = TokenMemo(tokenize)

    def __len__(self) -> int:
        return num_batches(len(self.index), self.batch_size, self.shuffle)

    def __iter__(self) -> Iterator[dict]:
        """One epoch; each new iteration is the next epoch. Persistent DataLoader workers keep their own copy and
        start one iteration per epoch, so every copy counts epochs in step without being told."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch, self.epoch = self.epoch, self.epoch + 1
        yield from self._epoch(epoch, worker, workers)

    def _epoch(self, epoch: int, worker: int, workers: int) -> Iterator[dict]:
        order = epoch_order(self.index, self.seed, epoch) if self.shuffle else np.arange(len(self.index))
        reader = _Reader(self.index.shards)
        try:
            for b in range(worker, len(self), workers):
                # under DDP each rank takes its share of every global batch, as in-memory training does
                items = order[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world]
                if not self.shuffle:  # evaluation: deterministic transforms
                    yield self.batch(items, reader)
                    continue
                with torch.random.fork_rng(devices=[]):  # the batch's crops depend on (seed, epoch, batch) alone
                    # (they draw on the CPU generator only; torch.manual_seed would also seed every accelerator)
                    torch.default_generator.manual_seed(item_seed(self.seed, epoch, b * self.world + self.rank))
                    batch = self.batch(items, reader)
                yield batch
        finally:
            reader.close()

    def batch(self, items: np.ndarray, reader: _Reader) -> dict:
        ix = self.index
        per_image, per_batch = self.per_image, self.per_batch
        if isinstance(per_image, FastRandomResizedCrop):  # draws from the generator seeded for this batch
            per_image = partial(per_image, raw=RawStream(torch.default_generator))
        images = [self.image(self.decode(i, reader), per_image) for i in items.tolist()]
        if per_batch is None:
            images = torch.stack(images)
        else:
            images = per_batch(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255))
        out = {"images": images, "labels": torch.from_numpy(ix.label[items]), "items": torch.from_numpy(items)}
        if self.tokenize is not None:
            out["tokens"] = self.tokenize([ix.caption[i] for i in items.tolist()])
        elif self.captions:  # tokenised by the consumer (ParentTokens)
            out["captions"] = [ix.caption[i] for i in items.tolist()]
        return out

    def decode(self, i: int, reader: _Reader) -> Image.Image:
        ix = self.index
        read = lambda: reader.read(int(ix.shard[i]), int(ix.offset[i]), int(ix.size[i]))  # noqa: E731
        return self.images.decode(i, read) if self.images is not None else decode_fresh(read())

    @staticmethod
    def image(img: Image.Image, transform: Callable):
        out = transform(img)
        return np.asarray(out) if isinstance(out, Image.Image) else out


def split_transform(transform) -> tuple[Callable, Callable | None]:
    """open_clip's Compose split at its to-tensor step: the PIL steps run per image, to-tensor (uint8 -> float / 255)
    and Normalize run once per batch (the same arithmetic, element by element, without per-image overhead); the PIL
    steps of a training transform run as `tailstudy.augment`'s exact replica where it has one.
    -> (per image, per batch); (transform, None) when the transform has no such shape."""
    from torchvision import transforms as T

    steps = getattr(transform, "transforms", None)
    names = [type(t).__name__ for t in steps or []]
    if len(names) < 2 or names[-2] not in ("MaybeToTensor", "ToTensor") or names[-1] != "Normalize":
        return transform, None
    normalize = BatchNormalize(steps[-1].mean, steps[-1].std)
    fast = fast_train_transform(steps[:-2])
    if fast is not None:
        return fast, normalize
    pil = [to_rgb if type(t).__name__ == "MaybeConvertMode" and t.mode == "RGB" else t for t in steps[:-2]]
    return T.Compose([*pil, to_rgb]), normalize


class MaybeConvertMode:
    """open_clip.transform.MaybeConvertMode's rule (a PIL image converted to `mode`; arrays and tensors as they are),
    under its name: a data worker unpickles it without importing open_clip (and with it timm, transformers, ...)."""

    def __init__(self, mode: str = "RGB"):
        self.mode = mode

    def __call__(self, pic):
        return pic if isinstance(pic, (np.ndarray, torch.Tensor)) else pic.convert(self.mode)


def portable_transform(transform):
    """open_clip's transform as a worker receives it: the same steps, its PIL mode step and its to-tensor step (which
    `split_transform` replaces anyway) swapped for same-rule stand-ins that need no open_clip import. Any other step
    is kept as it is (the worker then imports what that step needs)."""
    steps = getattr(transform, "transforms", None)
    if not steps or not any(type(t).__module__.startswith("open_clip") for t in steps):
        return transform
    from torchvision import transforms as T

    swap = {"MaybeConvertMode": lambda t: MaybeConvertMode(t.mode), "MaybeToTensor": lambda t: T.ToTensor()}
    return T.Compose([swap[type(t).__name__](t) if type(t).__module__.startswith("open_clip")
                      and type(t).__name__ in swap else t for t in steps])


def resolve_workers(workers: int | None, image_size: int) -> int:
    """`train.workers` (None = auto): no workers for small images (their decode is cheaper than starting processes),
    else up to 4, leaving a core to the training loop. Any value gives the same batches."""
    if workers is not None:
        return workers
    if image_size <= SMALL_IMAGE:
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def make_loader(stream: BatchStream, workers: int, pin: bool = False, persistent: bool = False) -> DataLoader:
    """Workers are fresh interpreters (spawn), not forks of the training process: a fork would carry the model, the
    optimiser state and a CUDA context into every worker (and count them in its RSS). Nor a fork server that preloads
    torch: it stays resident, a second copy of torch, for as long as the process lives. A spawned worker imports what
    unpickling the stream needs (torch, the transforms, PIL), starts once per loader (workers persist across epochs)
    and ends with it."""
    context = None
    if workers:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
    return DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin,
                      prefetch_factor=2 if workers else None, persistent_workers=persistent and workers > 0,
                      multiprocessing_context=context)


def open_clip_transform(preprocess_cfg: dict, train: bool):
    """open_clip's own transform for a model's preprocess config (what create_model_and_transforms returns)."""
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    return image_transform_v2(PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(), preprocess_cfg)), train)


@dataclass
class ShardData:
    """A training set streamed from a corpus's shards: what the train stage hands to `tailstudy.train.train`."""

    index: ItemIndex

    @property
    def num_samples(self) -> int:
        return len(self.index)

    def for_learner(self, learner, text: bool) -> "ShardBatches":
        keep = np.arange(len(self.index)) if learner.uses_unlabeled else np.flatnonzero(self.index.label >= 0)
        return ShardBatches(self.index.take(keep), open_clip_transform(learner.preprocess_cfg(), True),
                            learner.tokenizer if text else None, learner.preprocess_cfg()["size"])


class ParentTokens:
    """A loader whose batches carry captions, tokenised in the consuming process as each batch arrives."""

    def __init__(self, loader: DataLoader, tokenize: Callable):
        self.loader, self.tokenize = loader, tokenize

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            batch["tokens"] = self.tokenize(batch.pop("captions"))
            yield batch


@dataclass
class ShardBatches:
    """The epochs of one training run: one DataLoader whose workers persist across epochs (no start-up per epoch)."""

    index: ItemIndex
    transform: Callable
    tokenize: Callable | None
    image_size: int | tuple
    _loader: "DataLoader | ParentTokens | None" = None
    _next_epoch: int = -1

    @property
    def num_samples(self) -> int:
        return len(self.index)

    def epoch(self, epoch: int, seed: int, batch_size: int, rank: int, world: int, workers: int | None,
              pin: bool) -> "DataLoader | ParentTokens":
        if self._loader is None or epoch != self._next_epoch:
            size = self.image_size if isinstance(self.image_size, int) else max(self.image_size)
            workers, memo = resolve_workers(workers, size), size <= SMALL_IMAGE
            # with workers, captions are tokenised here, not in them: a spawned worker that unpickled open_clip's
            # tokenizer would import all of open_clip first (seconds per worker); tokens are the same either way
            in_parent = workers > 0 and self.tokenize is not None
            stream = BatchStream(self.index, self.transform, batch_size, seed, epoch, True,
                                 None if in_parent else self.tokenize, rank, world, memo=memo, captions=in_parent)
            self._loader = make_loader(stream, workers, pin, persistent=True)
            if in_parent:
                self._loader = ParentTokens(self._loader, TokenMemo(self.tokenize) if memo else self.tokenize)
        self._next_epoch = epoch + 1
        return self._loader
