"""Data workers that never import torch: read, decode and transform a batch's images into one uint8 array.

A DataLoader worker runs torch's worker loop, so it imports torch first: on this project's 2-core machine that is about
2 s of CPU and 0.6 GB of resident memory per worker before it decodes one image (the CUDA build of torch maps large
libraries). Where a model's per-image transform has an exact replica in `tailstudy.augment` (open_clip's default train
and eval transforms), a batch is built by an `ImageJob`, which needs only numpy and PIL, in `DataWorkers` (spawned
processes, a few tens of MB each); the training process draws the batch's random numbers, turns the uint8 batch into
floats and normalises it (`tailstudy.data.LightStream`). The batches are the DataLoader path's, bit for bit (tested).
"""
from __future__ import annotations

import multiprocessing
import weakref
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np

from tailstudy.augment import Draws
from tailstudy.memo import ImageMemo, decode_fresh


class Reader:
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
        self.files = {}


class ImageJob:
    """Items of an index -> their images, decoded and transformed, stacked as uint8 (N, H, W, C). `transform` takes
    a PIL image (and the batch's `Draws` when it is a training crop); `memo` keeps decoded images between epochs
    (`tailstudy.memo.ImageMemo`, bounded)."""

    def __init__(self, index, transform: Callable, memo: bool = False):
        self.shards, self.shard, self.offset, self.size = index.shards, index.shard, index.offset, index.size
        self.transform, self.memo = transform, memo
        self._reader, self._images = None, None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None, "_images": None}  # open files and memos stay with their process

    def __call__(self, items: np.ndarray, draws: Draws | None = None) -> np.ndarray:
        if self._reader is None:
            self._reader = Reader(self.shards)
            self._images = ImageMemo() if self.memo else None
        out = []
        for i in items.tolist():
            img = self.decode(i)
            img = self.transform(img) if draws is None else self.transform(img, draws)
            out.append(np.asarray(img))
        return np.stack(out)

    def decode(self, i: int):
        read = lambda: self._reader.read(int(self.shard[i]), int(self.offset[i]), int(self.size[i]))  # noqa: E731
        return self._images.decode(i, read) if self._images is not None else decode_fresh(read())

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


_job: ImageJob | None = None  # a worker process's job, set once when it starts


def _start(job: ImageJob) -> None:
    global _job
    _job = job


def _run(items: np.ndarray, draws: Draws | None) -> np.ndarray:
    return _job(items, draws)


class DataWorkers:
    """`workers` spawned processes holding one `ImageJob` each, started once and kept until `close` (or until the
    object is collected); `map` keeps up to two tasks per worker in flight and yields results in task order."""

    def __init__(self, job: ImageJob, workers: int, depth: int = 2):
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
                                        initargs=(job,))
        self.depth = depth * workers
        self._finalizer = weakref.finalize(self, self.pool.shutdown, wait=False, cancel_futures=True)

    def map(self, tasks: Iterable[tuple]) -> Iterator[tuple[tuple, np.ndarray]]:
        """-> (task, job(*task)) for every task, in order. A consumer that stops early cancels what is queued."""
        pending: deque = deque()
        try:
            for task in tasks:
                pending.append((task, self.pool.submit(_run, *task)))
                if len(pending) >= self.depth:
                    task_done, future = pending.popleft()
                    yield task_done, future.result()
            while pending:
                task_done, future = pending.popleft()
                yield task_done, future.result()
        finally:
            for _task, future in pending:
                future.cancel()

    def close(self) -> None:
        self._finalizer()
