"""Streamed training and evaluation data: webdataset tar shards -> data worker processes -> batches.

Nothing holds the images of a subset: batches are read from the shards through an item index (`tailstudy.items`),
decoded and transformed when they are needed, with open_clip's own transforms for the model (RandomResizedCrop for
training, resize + centre crop for evaluation, the model's mean/std).

The rule that keeps runs deterministic: an epoch's sample order is a pure function of (index, seed, epoch)
(`tailstudy.items.epoch_order`), and batch b of that order has its images augmented under the seed (seed, epoch, b),
whichever process builds it; batches come back in order. So the batches, and the weights trained on them, are the
same for any number of workers (a pure speed option). Reads stay near-sequential: a batch spans at most the shuffle
buffer's window of the stream.

Two ways to build batches, the same batches either way (tested):

- ``LightStream`` (open_clip's default transforms, which have exact replicas in `tailstudy.augment`): images are
  built by torch-free `tailstudy.workers.ImageJob`s in spawned `DataWorkers` (or in this process with no workers);
  this process draws each batch's random numbers and turns the uint8 batch into normalised floats.
- ``BatchStream`` through a ``torch.utils.data.DataLoader`` (any other transform): its workers import torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tailstudy.augment import (BatchNormalize, FastRandomResizedCrop, ResizeCentreCrop, fast_eval_transform,
                               fast_train_transform, to_rgb)
from tailstudy.items import (SHUFFLE_BUFFER, ItemIndex, build_index, epoch_order, eval_index, item_seed,  # noqa: F401
                             num_batches, subset_index)
from tailstudy.memo import ImageMemo, TokenMemo, decode_fresh
from tailstudy.workers import DataWorkers, ImageJob, Reader

SMALL_IMAGE = 64  # model inputs up to this size: no workers by default (their decode is a few % of a step; workers
# would compete with training for the same cores)
LIGHT = (FastRandomResizedCrop, ResizeCentreCrop)  # per-image transforms a torch-free worker can run


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
        reader = Reader(self.index.shards)
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

    def batch(self, items: np.ndarray, reader: Reader) -> dict:
        ix = self.index
        per_image, per_batch = self.per_image, self.per_batch
        if isinstance(per_image, FastRandomResizedCrop):  # draws from the generator seeded for this batch
            draws = per_image.draws(torch.default_generator, len(items))
            per_image = lambda img, crop=per_image: crop(img, draws)  # noqa: E731
        images = [self.image(self.decode(i, reader), per_image) for i in items.tolist()]
        if per_batch is None:
            images = torch.stack(images)
        else:
            images = float_batch(torch.from_numpy(np.stack(images)), per_batch)
        out = {"images": images, "labels": torch.from_numpy(ix.label[items]), "items": torch.from_numpy(items)}
        if self.tokenize is not None:
            out["tokens"] = self.tokenize([ix.caption[i] for i in items.tolist()])
        elif self.captions:  # tokenised by the consumer (ParentTokens)
            out["captions"] = [ix.caption[i] for i in items.tolist()]
        return out

    def decode(self, i: int, reader: Reader) -> Image.Image:
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
    steps run as `tailstudy.augment`'s exact replica where it has one (open_clip's default train and eval steps).
    -> (per image, per batch); (transform, None) when the transform has no such shape."""
    from torchvision import transforms as T

    steps = getattr(transform, "transforms", None)
    names = [type(t).__name__ for t in steps or []]
    if len(names) < 2 or names[-2] not in ("MaybeToTensor", "ToTensor") or names[-1] != "Normalize":
        return transform, None
    normalize = BatchNormalize(steps[-1].mean, steps[-1].std)
    fast = fast_train_transform(steps[:-2]) or fast_eval_transform(steps[:-2])
    if fast is not None:
        return fast, normalize
    pil = [to_rgb if type(t).__name__ == "MaybeConvertMode" and t.mode == "RGB" else t for t in steps[:-2]]
    return T.Compose([*pil, to_rgb]), normalize


def float_batch(images: torch.Tensor, normalize: Callable) -> torch.Tensor:
    """uint8 (N, H, W, C) -> normalised float (N, C, H, W): to-tensor's arithmetic for the whole batch (a channels-last
    view of the uint8 batch, as it always was: the strides are part of what the model computes)."""
    return normalize(images.permute(0, 3, 1, 2).float().div_(255))


def images_on(batch: dict, device: torch.device) -> torch.Tensor:
    """A batch's images as the model's float input on `device`. A LightStream feeding a GPU hands over uint8 pixels
    (a quarter of the bytes to copy) and their `normalize`: the conversion runs on the GPU, with the same IEEE
    operations, instead of holding up the one process that feeds it."""
    images = batch["images"].to(device, non_blocking=True)
    return float_batch(images, batch["normalize"]) if images.dtype == torch.uint8 else images


class LightStream:
    """BatchStream's batches (same items, crops, floats and tokens) with a per-image transform in `LIGHT`: images
    built by `ImageJob`s in `workers` torch-free processes (none: in this process), the batch's random numbers drawn
    and its floats and tokens made here. Each iteration is the next epoch; the workers persist until `close`."""

    def __init__(self, index: ItemIndex, split: tuple[Callable, Callable], batch_size: int, seed: int = 0,
                 epoch: int = 0, shuffle: bool = True, tokenize: Callable | None = None, rank: int = 0,
                 world: int = 1, memo: bool = False, workers: int = 0, pin: bool = False):
        self.pin = pin
        self.index, self.batch_size, self.seed, self.epoch, self.shuffle = index, batch_size, seed, epoch, shuffle
        (self.per_image, self.per_batch), self.rank, self.world = split, rank, world
        self.tokenize = TokenMemo(tokenize) if memo and tokenize is not None else tokenize
        self.job = ImageJob(index, self.per_image, memo)
        self.workers = DataWorkers(self.job, workers) if workers else None

    def __len__(self) -> int:
        return num_batches(len(self.index), self.batch_size, self.shuffle)

    def tasks(self, epoch: int) -> Iterator[tuple[np.ndarray, object]]:
        order = epoch_order(self.index, self.seed, epoch) if self.shuffle else np.arange(len(self.index))
        crop = self.per_image if self.shuffle and isinstance(self.per_image, FastRandomResizedCrop) else None
        for b in range(len(self)):
            items = order[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world]
            seed = item_seed(self.seed, epoch, b * self.world + self.rank)
            yield items, crop.draws(torch.Generator().manual_seed(seed), len(items)) if crop else None

    def __iter__(self) -> Iterator[dict]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        tasks = self.tasks(epoch)
        built = self.workers.map(tasks) if self.workers else ((task, self.job(*task)) for task in tasks)
        for (items, _draws), images in built:
            yield self.assemble(items, images)

    def assemble(self, items: np.ndarray, images: np.ndarray) -> dict:
        """A batch's tensors from its items and their uint8 images."""
        images = torch.from_numpy(images)
        out = {"labels": torch.from_numpy(self.index.label[items]), "items": torch.from_numpy(items)}
        if self.pin:  # feeding a GPU: pinned uint8, converted on the device (images_on)
            out.update(images=images.pin_memory() if torch.cuda.is_available() else images,
                       normalize=self.per_batch)
        else:
            out["images"] = float_batch(images, self.per_batch)
        if self.tokenize is not None:
            out["tokens"] = self.tokenize([self.index.caption[i] for i in items.tolist()])
        return out

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
        self.job.close()


def open_batches(index: ItemIndex, transform: Callable, batch_size: int, workers: int, seed: int = 0,
                 epoch: int = 0, shuffle: bool = True, tokenize: Callable | None = None, rank: int = 0, world: int = 1,
                 memo: bool = False, pin: bool = False):
    """The batches of `transform` over `index`, epoch after epoch: a LightStream where the transform has a replica,
    else a DataLoader over a BatchStream (persistent workers; captions tokenised in this process when it has workers:
    a spawned worker that unpickled open_clip's tokenizer would import all of open_clip first). Both have `close`."""
    split = split_transform(portable_transform(transform))
    if isinstance(split[0], LIGHT) and split[1] is not None:
        return LightStream(index, split, batch_size, seed, epoch, shuffle, tokenize, rank, world, memo, workers, pin)
    in_parent = workers > 0 and tokenize is not None
    batches = BatchStream(index, transform, batch_size, seed, epoch, shuffle, None if in_parent else tokenize, rank,
                          world, memo=memo, captions=in_parent)
    loader = make_loader(batches, workers, pin, persistent=True)
    return ParentTokens(loader, TokenMemo(tokenize) if memo else tokenize) if in_parent else ParentTokens(loader)


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
    """`train.workers` (None = auto): no workers for small images (see SMALL_IMAGE), else up to 4, leaving a core to
    the training loop. Any value gives the same batches."""
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
    """A DataLoader whose batches may carry captions, tokenised in the consuming process as each batch arrives."""

    def __init__(self, loader: DataLoader, tokenize: Callable | None = None):
        self.loader, self.tokenize = loader, tokenize

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            if self.tokenize is not None:
                batch["tokens"] = self.tokenize(batch.pop("captions"))
            yield batch

    def close(self) -> None:
        """Stop persistent workers now rather than when the loader is collected."""
        running = getattr(self.loader, "_iterator", None)
        if running is not None and hasattr(running, "_shutdown_workers"):
            running._shutdown_workers()


@dataclass
class ShardBatches:
    """The epochs of one training run: one stream whose workers persist across epochs (no start-up per epoch)."""

    index: ItemIndex
    transform: Callable
    tokenize: Callable | None
    image_size: int | tuple
    _stream: "LightStream | ParentTokens | None" = None
    _next_epoch: int = -1

    @property
    def num_samples(self) -> int:
        return len(self.index)

    def epoch(self, epoch: int, seed: int, batch_size: int, rank: int, world: int, workers: int | None,
              pin: bool) -> "LightStream | ParentTokens":
        if self._stream is None or epoch != self._next_epoch:
            self.close()
            size = self.image_size if isinstance(self.image_size, int) else max(self.image_size)
            self._stream = open_batches(self.index, self.transform, batch_size, resolve_workers(workers, size), seed, epoch,
                                  True, self.tokenize, rank, world, memo=size <= SMALL_IMAGE, pin=pin)
        self._next_epoch = epoch + 1
        return self._stream

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
