"""Training and evaluation batches, streamed from a corpus's webdataset shards, behind one protocol (`DataSource`).

Nothing holds the images of a subset: an item index (`tailstudy.items.ItemIndex`: shard, byte offset and size of each
item's image, its label and caption) says where each image is; batches are read, decoded and transformed when they
are needed.

`ShardSource` is the one implementation for images: a ``torch.utils.data.DataLoader`` over `ShardBatches`, an
IterableDataset that reads each item by offset, decodes it with PIL and applies open_clip's own transform for the
model (`open_clip.transform.image_transform_v2` of the model's preprocess config: torchvision's RandomResizedCrop for
training, resize + centre crop for evaluation, the model's mean and std). Its workers are spawned, not forked.

The rule that keeps runs deterministic: an epoch's item order is a pure function of (index, seed, epoch)
(`tailstudy.items.epoch_order`), and batch b's random crops are drawn from torch's CPU generator seeded by
(seed, epoch, b), whichever worker builds it; batches come back in order. So the batches, and the weights trained on
them, are the same for any number of workers (tested): `workers` is a speed option, not part of a run's key.

Captions are tokenised once per run, when the source opens (a token row depends on its caption alone; open_clip's
tokenizer takes ~0.12 ms a caption, which every epoch would pay again), and the int32 rows travel with the dataset to
workers instead of the caption strings. The transform's to-tensor and Normalize steps run once per batch on the
stacked uint8 images, with the same element-wise arithmetic (`split_at_tensor`). A script that trains with workers
needs the ``if __name__ == "__main__":`` guard, as any spawning program does (a spawned worker imports the script's
main module).

Slot for a GPU decode backend (not implemented: there are no GPU figures to justify one yet). It would be a second
`DataSource` that decodes JPEGs on the GPU (nvJPEG through ``torchvision.io.decode_jpeg(..., device="cuda")``, or
NVIDIA DALI's ``fn.decoders.image`` + ``fn.random_resized_crop``): the same ItemIndex, the same order rule
(`epoch_order`, one generator seeded per (seed, epoch, batch)) and the same batch dicts, with the images already on
the device. It plugs in at `open_source`, the one place that picks an implementation; training and evaluation would
not change. Its crops would come from another random-number stream than torchvision's, so its runs would differ from
CPU-decoded ones: choosing it would be a key option, unlike `workers`.
"""
from __future__ import annotations

import io
import mmap
import multiprocessing
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.transforms import Compose, PILToTensor

from tailstudy.items import ItemIndex, epoch_order, item_seed, num_batches


class DataSource(Protocol):
    """What training (`tailstudy.train`) and evaluation (`tailstudy.data_eval`) read batches from.

    A batch is a dict: "images" float (N, C, H, W), transformed and normalised as the model expects; "labels" long (N,)
    (class index, -1 for an open-world sample); "items" long (N,) (rows of the item index: evaluation puts each
    output in its place by them); "tokens" long (N, context), the captions tokenised, when the source was opened with
    a tokenizer. Under DDP, rank r of `world` gets its share of every global batch."""

    @property
    def num_samples(self) -> int:
        """Items per epoch (all ranks together)."""

    def batches(self, epoch: int, seed: int = 0, rank: int = 0, world: int = 1) -> Iterable[dict]:
        """The batches of `epoch`, in order: a pure function of (items, seed, epoch, rank, world)."""

    def close(self) -> None:
        """End whatever runs beside the source (data workers): at the end of a run, not when collected."""


class ShardBatches(IterableDataset):
    """The batches of one epoch per iteration (the module's rule): what each DataLoader worker unpickles and runs.
    `tokens`: every item's caption tokenised (text learners), one row per item."""

    def __init__(self, index: ItemIndex, transform: Callable, batch_size: int, shuffle: bool = True,
                 tokens: torch.Tensor | None = None, seed: int = 0, epoch: int = 0, rank: int = 0, world: int = 1):
        self.index, self.batch_size, self.shuffle = index, batch_size, shuffle
        self.per_image, self.per_batch = split_at_tensor(transform)
        self.tokens, self.seed, self.epoch, self.rank, self.world = tokens, seed, epoch, rank, world

    def __len__(self) -> int:
        return num_batches(len(self.index), self.batch_size, self.shuffle)

    def __iter__(self) -> Iterator[dict]:
        """The next epoch: every call is one epoch further. Each persistent worker holds its own copy of the dataset
        and the DataLoader calls `iter` on every copy once per epoch (with no workers: on this one), so all copies
        count epochs in step without being told."""
        info = get_worker_info()
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self._epoch(epoch, *((info.id, info.num_workers) if info else (0, 1)))

    def _epoch(self, epoch: int, worker: int, workers: int) -> Iterator[dict]:
        order = epoch_order(self.index, self.seed, epoch) if self.shuffle else np.arange(len(self.index))
        files: dict[int, object] = {}
        try:
            # worker w builds batches w, w + workers, ...; the DataLoader takes one from each worker in turn: in order
            for b in range(worker, len(self), workers):
                items = order[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world]
                if not self.shuffle:  # evaluation: no random steps
                    yield self.batch(items, files)
                    continue
                with torch.random.fork_rng(devices=[]):  # the crops draw on the CPU generator alone (a plain
                    # torch.manual_seed would also seed, and initialise, every accelerator)
                    torch.default_generator.manual_seed(item_seed(self.seed, epoch, b * self.world + self.rank))
                    batch = self.batch(items, files)
                yield batch
        finally:
            for f in files.values():
                f.close()

    def batch(self, items: np.ndarray, files: dict) -> dict:
        images = torch.stack([self.per_image(self.image(i, files)) for i in items.tolist()])
        if self.per_batch is not None:  # the transform's to-tensor and Normalize, on the whole batch at once
            images = self.per_batch(images.float().div_(255))
        out = {"images": images, "labels": torch.from_numpy(self.index.label[items]), "items": torch.from_numpy(items)}
        if self.tokens is not None:
            out["tokens"] = self.tokens[torch.from_numpy(items)].long()
        return out

    def image(self, i: int, files: dict) -> Image.Image:
        shard = int(self.index.shard[i])
        data = files.get(shard)
        if data is None:  # the shard mapped read-only: an image is a slice of it, no seek and read per image
            with open(self.index.shards[shard], "rb") as f:
                data = files[shard] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        start = int(self.index.offset[i])
        img = Image.open(io.BytesIO(data[start:start + int(self.index.size[i])]))
        # RGB before the transform, as webdataset's "pilrgb" decoding that open_clip_train uses (PIL would resize a
        # palette image with nearest-neighbour sampling, whatever the transform asks)
        return img if img.mode == "RGB" else img.convert("RGB")


class ShardSource:
    """The DataSource for images in shards (see the module doc). Consecutive epochs of one (seed, rank, world) share
    one DataLoader whose workers persist (spawned once per run); any other request opens a fresh one."""

    def __init__(self, index: ItemIndex, transform: Callable, batch_size: int, workers: int, shuffle: bool = True,
                 tokenize: Callable | None = None, pin: bool = False):
        self.index, self.transform, self.batch_size, self.workers = index, transform, batch_size, workers
        self.shuffle, self.pin = shuffle, pin
        # captions are tokenised once per run, not once per epoch (each token row depends on its caption alone)
        self.tokens = tokenize_all(tokenize, index.caption) if tokenize is not None else None
        self._loader: DataLoader | None = None
        self._next: tuple | None = None  # (epoch, seed, rank, world) the open loader's next iteration yields

    @property
    def num_samples(self) -> int:
        return len(self.index)

    def batches(self, epoch: int, seed: int = 0, rank: int = 0, world: int = 1) -> DataLoader:
        if self._loader is None or self._next != (epoch, seed, rank, world):
            self.close()
            dataset = ShardBatches(self.index, self.transform, self.batch_size, self.shuffle, self.tokens, seed,
                                   epoch, rank, world)
            self._loader = make_loader(dataset, self.workers, self.pin)
        self._next = (epoch + 1, seed, rank, world)
        return self._loader

    def close(self) -> None:
        running = getattr(self._loader, "_iterator", None)  # set only where workers persist
        if hasattr(running, "_shutdown_workers"):  # they stop now rather than when the loader is collected
            running._shutdown_workers()
        self._loader = self._next = None


def tokenize_all(tokenize: Callable, captions: list[str], chunk: int = 4096) -> torch.Tensor:
    """Every caption's token row (int32: half the memory of the tokenizer's int64; the batch restores it)."""
    return torch.cat([tokenize(captions[i:i + chunk]).to(torch.int32) for i in range(0, len(captions), chunk)])


def split_at_tensor(transform) -> tuple[Callable, Callable | None]:
    """open_clip's transform as (per image, per batch): its steps up to the to-tensor step on each PIL image, ending in
    a uint8 tensor, then to-tensor's float conversion and its Normalize on the stacked batch -- the same arithmetic,
    element by element, without two tensor operations per image. Any other transform runs whole, per image."""
    steps = list(getattr(transform, "transforms", []))
    names = [type(step).__name__ for step in steps]
    if len(steps) < 2 or names[-2] not in ("MaybeToTensor", "ToTensor") or names[-1] != "Normalize":
        return transform, None
    return Compose([*steps[:-2], PILToTensor()]), steps[-1]


def make_loader(dataset: ShardBatches, workers: int, pin: bool = False) -> DataLoader:
    """Workers are fresh interpreters (spawn), not forks of the training process: a fork would carry the model, the
    optimiser state and any CUDA context into every worker (and count them in its memory). A spawned worker imports
    what unpickling the dataset needs (torch, open_clip for its transform, PIL), once per run: workers persist across
    epochs."""
    return DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=pin,
                      prefetch_factor=2 if workers else None, persistent_workers=workers > 0,
                      multiprocessing_context=multiprocessing.get_context("spawn") if workers else None)


def open_clip_transform(preprocess_cfg: dict, train: bool):
    """open_clip's own transform for a model's preprocess config (what create_model_and_transforms returns)."""
    return image_transform_v2(PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(), preprocess_cfg)), train)


def data_workers(workers: int | None, device: torch.device) -> int:
    """`train.workers` (None = this rule): none on a CPU, whose cores all run the model's step already (a worker would
    only move the same decoding onto them, after seconds of start-up importing torch and open_clip, for ~0.5 GB
    more; measured on 2 cores: RN50 at 224 px waited 0.1 % of an epoch for one worker's batches, the tiny model at
    32 px 6-14 % for in-process ones); on a GPU up to 4, leaving a core to the training loop. Any value gives the same
    batches."""
    if workers is not None:
        return workers
    return 0 if device.type == "cpu" else max(1, min(4, (os.cpu_count() or 2) - 1))


def open_source(index: ItemIndex, preprocess_cfg: dict, train: bool, batch_size: int, workers: int | None,
                device: torch.device, tokenize: Callable | None = None) -> DataSource:
    """The data source of `index` for a model with `preprocess_cfg` (where a GPU decode backend would be chosen)."""
    return ShardSource(index, open_clip_transform(preprocess_cfg, train), batch_size,
                       data_workers(workers, device), shuffle=train, tokenize=tokenize,
                       pin=device.type == "cuda")


@dataclass
class ShardData:
    """A training set streamed from a corpus's shards: what the train stage hands to `tailstudy.train.train`."""

    index: ItemIndex

    @property
    def num_samples(self) -> int:
        return len(self.index)

    def for_learner(self, learner, text: bool, batch_size: int, workers: int | None,
                    device: torch.device) -> DataSource:
        """The items this learner trains on (a supervised learner skips open-world ones) as a training source."""
        keep = np.arange(len(self.index)) if learner.uses_unlabeled else np.flatnonzero(self.index.label >= 0)
        # the learner's tokenizer, not its bound `tokenize`: workers unpickle it, and must not get the model with it
        return open_source(self.index.take(keep), learner.preprocess_cfg(), True, batch_size, workers, device,
                           learner.tokenizer if text else None)
