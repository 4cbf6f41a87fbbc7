"""Streamed data (tailstudy.data): batches independent of the worker count, seeded, bounded memory, spawned workers;
items located by the shards' recorded member indexes; training on shards is deterministic per seed."""
from __future__ import annotations

import io
import pickle
import sys
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tailstudy.corpus.shards import ShardWriter, encode_png, image_members
from tailstudy.data import ShardBatches, ShardData, ShardSource, data_workers, open_clip_transform
from tailstudy.items import ItemIndex, locate_items, epoch_order

CFG = {"size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "interpolation": "bicubic",
       "resize_mode": "shortest"}


def write_shards(root: Path, n: int, size: int = 32, per_shard: int = 50) -> dict[str, list[tuple[int, str]]]:
    """n random images in shards of `per_shard`; -> the wanted map of every key (label = i % 4, one copy; every
    fifth sample twice, with different captions)."""
    rng = np.random.default_rng(0)
    wanted = {}
    for start in range(0, n, per_shard):
        with ShardWriter(root / f"train-{start // per_shard:05d}.tar") as w:
            for i in range(start, min(start + per_shard, n)):
                key = f"s{i:06d}"
                w.add(key, {"png": encode_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)), "txt": b"x"})
                wanted[key] = [(i % 4, f"caption {i}")] + ([(i % 4, f"other {i}")] if i % 5 == 0 else [])
    return wanted


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> ItemIndex:
    root = tmp_path_factory.mktemp("shards")
    wanted = write_shards(root, 120)
    return locate_items(sorted(root.glob("*.tar")), wanted, root, with_captions=True)


def caption_lengths(texts: list[str]) -> torch.Tensor:  # a stand-in tokenizer (module level: workers unpickle it)
    return torch.tensor([len(t) for t in texts])


def batches(index, workers: int, seed: int = 0, epoch: int = 0, batch_size: int = 16) -> list[dict]:
    source = ShardSource(index, open_clip_transform(CFG, True), batch_size, workers, tokenize=caption_lengths)
    try:
        return list(source.batches(epoch, seed))
    finally:
        source.close()


def assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_index_applies_the_manifest_copies_and_captions(index):
    assert len(index) == 120 + 24  # every fifth sample has a second copy
    assert sorted(index.caption)[:2] == ["caption 0", "caption 1"] and "other 5" in index.caption
    assert np.bincount(index.label).tolist() == [36, 36, 36, 36]


def test_items_are_located_by_the_recorded_index_not_the_tar_headers(tmp_path):
    """The shards' member indexes (written with them) place every image: with every tar header wiped, the item index
    and the images it reads are unchanged."""
    wanted = write_shards(tmp_path, 10)
    shard = tmp_path / "train-00000.tar"
    before = locate_items([shard], wanted, tmp_path, False)
    data = bytearray(shard.read_bytes())
    for _key, _ext, offset, _size in image_members(shard):
        data[offset - 512:offset] = bytes(512)  # a plain ustar header sits right before its member's data
    shard.write_bytes(bytes(data))
    after = locate_items([shard], wanted, tmp_path, False)
    assert np.array_equal(before.offset, after.offset) and np.array_equal(before.size, after.size)
    source = ShardSource(after, open_clip_transform(CFG, False), 4, 0, shuffle=False)
    assert next(iter(source.batches(0)))["images"].shape == (4, 3, 32, 32)


def test_epoch_order_is_a_seeded_permutation(index):
    a, b = epoch_order(index, 0, 0), epoch_order(index, 0, 0)
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(len(index)))
    assert not np.array_equal(a, epoch_order(index, 1, 0)) and not np.array_equal(a, epoch_order(index, 0, 1))
    assert not np.array_equal(a, np.arange(len(index)))


@pytest.mark.slow
def test_batches_do_not_depend_on_the_number_of_workers(index, one_torch_thread):
    zero, two = batches(index, 0), batches(index, 2)
    assert len(zero) == len(two) == 9
    assert_same(zero, two)
    assert_same(zero, batches(index, 0))
    other = batches(index, 0, epoch=1)  # another epoch: another order and other crops
    assert not torch.equal(zero[0]["items"], other[0]["items"])
    assert zero[0]["images"].shape == (16, 3, 32, 32) and zero[0]["images"].dtype == torch.float32
    assert torch.equal(zero[0]["tokens"], caption_lengths([index.caption[i] for i in zero[0]["items"].tolist()]))


def test_eval_transform_is_open_clips_resize_and_centre_crop(tmp_path):
    wanted = write_shards(tmp_path, 4, size=48)
    idx = locate_items(sorted(tmp_path.glob("*.tar")), {k: v[:1] for k, v in wanted.items()}, tmp_path, False)
    transform = open_clip_transform(CFG, False)
    got = next(iter(ShardBatches(idx, transform, 4, shuffle=False)))["images"]
    with open(tmp_path / "train-00000.tar", "rb") as f:
        f.seek(int(idx.offset[0]))
        expected = transform(Image.open(io.BytesIO(f.read(int(idx.size[0])))))
    assert got.shape == (4, 3, 32, 32) and torch.equal(got[0], expected)
    in_worker = pickle.loads(pickle.dumps(ShardBatches(idx, transform, 4, shuffle=False)))  # what a worker unpickles
    assert torch.equal(next(iter(in_worker))["images"], got)


MARK = "tailstudy_test_parent_only"


class ForkCheck:
    """The transform, whole (so per image, to-tensor and Normalize included), refusing to run in a process that has
    the parent's modules: a forked worker would."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        if MARK in sys.modules:
            raise RuntimeError("a data worker has the training process's modules: it was forked, not spawned")
        return self.transform(image)


def test_spawned_workers_persist_and_a_run_can_leave_an_epoch_early(index, one_torch_thread):
    """Workers are fresh interpreters, not forks: a fork would inherit everything the training process holds (its
    model, optimiser, a CUDA context). A run capped by max_steps leaves an epoch early: the next epoch's batches are
    still that epoch's, from the same persistent workers."""
    expected = batches(index, 0, epoch=1)
    sys.modules[MARK] = types.ModuleType(MARK)
    source = ShardSource(index, ForkCheck(open_clip_transform(CFG, True)), 16, 1)
    try:
        first = iter(source.batches(0))
        next(first), next(first)
        loader = source.batches(1)
        got = list(loader)
        assert source.batches(2) is loader  # the next epoch: the same loader, its workers kept
    finally:
        source.close()
        del sys.modules[MARK]
    # the whole transform per image in a spawned worker gives the batches of the split one in this process
    assert_same([{k: v for k, v in b.items() if k != "tokens"} for b in expected], got)


def test_a_broken_image_fails_the_run(tmp_path):
    with ShardWriter(tmp_path / "s.tar") as w:
        w.add("good", {"png": encode_png(np.zeros((24, 24, 3), np.uint8))})
        w.add("bad", {"png": b"\x89PNG not an image"})
    index = locate_items([tmp_path / "s.tar"], {"good": [(0, "")], "bad": [(0, "")]}, tmp_path, False)
    source = ShardSource(index, open_clip_transform(CFG, False), 2, 0, shuffle=False)
    with pytest.raises(Exception, match="cannot identify image"):
        list(source.batches(0))


def test_default_workers():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert data_workers(3, cpu) == 3 and data_workers(0, cuda) == 0  # a set value is kept
    assert data_workers(None, cpu) == 0 and 1 <= data_workers(None, cuda) <= 4


def peak_python_memory(index: ItemIndex) -> int:
    stream = ShardBatches(index, open_clip_transform({**CFG, "size": 64}, False), 8, shuffle=False)
    tracemalloc.start()
    try:
        for _ in stream:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_iterating_holds_a_batch_not_the_dataset(tmp_path):
    """Reading 4x more images must not need 4x the memory (raw bytes or decoded arrays of all images would)."""
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir(), large.mkdir()
    peaks = []
    for root, n in ((small, 100), (large, 400)):
        wanted = write_shards(root, n, size=64)
        peaks.append(peak_python_memory(locate_items(sorted(root.glob("*.tar")), wanted, root, False)))
    image_bytes = 64 * 64 * 3
    assert peaks[1] < peaks[0] + 40 * image_bytes, peaks  # 300 more images would be > 300 * image_bytes


@pytest.mark.slow
def test_training_on_shards_is_deterministic_per_seed_for_any_worker_count(index, tmp_path, one_torch_thread):
    from tailstudy.spec import TrainSpec
    from tailstudy.train import train

    def weights(seed: int, workers: int, name: str):
        cfg = TrainSpec(arch="tiny", epochs=2, batch_size=32, device="cpu", workers=workers)
        (tmp_path / name).mkdir()
        learner, log = train("sl", ShardData(index), [36] * 4, cfg, seed, tmp_path / name)
        assert [row["steps"] for row in log] == [5, 5] and log[0]["samples"] == len(index)
        assert 0 <= log[0]["data_wait_frac"] <= 1 and log[0]["samples_per_s"] > 0 and log[0]["peak_rss_mb"] > 0
        return learner.state_dict()

    a, b, c = weights(0, 0, "a"), weights(0, 2, "b"), weights(1, 0, "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.slow
def test_clip_tokenised_in_workers_gives_the_same_weights(index, tmp_path, one_torch_thread):
    """A text learner's captions are tokenised where the batch is built (a data worker, or this process with
    none): the weights are the same."""
    from tailstudy.spec import TrainSpec
    from tailstudy.train import train

    def weights(workers: int, name: str):
        cfg = TrainSpec(arch="tiny", epochs=2, batch_size=32, device="cpu", workers=workers)
        (tmp_path / name).mkdir()
        learner, _ = train("clip", ShardData(index), [36] * 4, cfg, 0, tmp_path / name)
        return learner.state_dict()

    a, b = weights(0, "a"), weights(2, "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_max_steps_caps_a_run(index, tmp_path, one_torch_thread):
    from tailstudy.spec import TrainSpec
    from tailstudy.train import train

    cfg = TrainSpec(arch="tiny", epochs=3, batch_size=32, device="cpu", max_steps=7)
    _, log = train("sl", ShardData(index), [36] * 4, cfg, 0, tmp_path)
    assert [row["steps"] for row in log] == [5, 2]
