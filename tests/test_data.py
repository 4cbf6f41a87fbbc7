"""Streamed data (tailstudy.data): batches independent of the worker count, seeded, bounded memory; training on shards
is deterministic per seed; a CLIP run's export loads with open_clip's API alone and gives the evaluate stage's top-1."""
from __future__ import annotations

import io
import pickle
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tailstudy.corpus.shards import ShardWriter, encode_png
from tailstudy.data import BatchStream, ItemIndex, ShardData, build_index, epoch_order, make_loader, open_clip_transform

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
    return build_index(sorted(root.glob("*.tar")), wanted, root, with_captions=True)


def caption_lengths(texts: list[str]) -> torch.Tensor:  # a stand-in tokenizer (module level: workers unpickle it)
    return torch.tensor([len(t) for t in texts])


def batches(index, workers: int, seed: int = 0, epoch: int = 0, batch_size: int = 16) -> list[dict]:
    stream = BatchStream(index, open_clip_transform(CFG, True), batch_size, seed, epoch, True,
                         tokenize=caption_lengths)
    return list(make_loader(stream, workers))


def test_index_applies_the_manifest_copies_and_captions(index):
    assert len(index) == 120 + 24  # every fifth sample has a second copy
    assert sorted(index.caption)[:2] == ["caption 0", "caption 1"] and "other 5" in index.caption
    assert np.bincount(index.label).tolist() == [36, 36, 36, 36]


def test_epoch_order_is_a_seeded_permutation(index):
    a, b = epoch_order(index, 0, 0), epoch_order(index, 0, 0)
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(len(index)))
    assert not np.array_equal(a, epoch_order(index, 1, 0)) and not np.array_equal(a, epoch_order(index, 0, 1))
    assert not np.array_equal(a, np.arange(len(index)))


@pytest.mark.slow
def test_batches_do_not_depend_on_the_number_of_workers(index, one_torch_thread):
    zero, two = batches(index, 0), batches(index, 2)
    assert len(zero) == len(two) == 9
    for a, b in zip(zero, two):
        assert torch.equal(a["items"], b["items"]) and torch.equal(a["images"], b["images"])
        assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["tokens"], b["tokens"])
    again = batches(index, 0)
    assert all(torch.equal(a["images"], b["images"]) for a, b in zip(zero, again))
    other = batches(index, 0, epoch=1)  # another epoch: another order and other crops
    assert not torch.equal(zero[0]["items"], other[0]["items"])
    assert zero[0]["images"].shape == (16, 3, 32, 32) and zero[0]["images"].dtype == torch.float32


def test_eval_transform_is_open_clips_resize_and_centre_crop(tmp_path):
    wanted = write_shards(tmp_path, 4, size=48)
    idx = build_index(sorted(tmp_path.glob("*.tar")), {k: v[:1] for k, v in wanted.items()}, tmp_path, False)
    transform = open_clip_transform(CFG, False)
    got = next(iter(BatchStream(idx, transform, 4, shuffle=False)))["images"]
    with open(tmp_path / "train-00000.tar", "rb") as f:
        f.seek(int(idx.offset[0]))
        expected = transform(Image.open(io.BytesIO(f.read(int(idx.size[0])))))
    assert got.shape == (4, 3, 32, 32) and torch.equal(got[0], expected)
    in_worker = pickle.loads(pickle.dumps(BatchStream(idx, transform, 4, shuffle=False)))  # what a worker unpickles
    assert torch.equal(next(iter(in_worker))["images"], got)


def test_a_data_worker_imports_neither_open_clip_nor_pyarrow(index, tmp_path):
    """A spawned worker unpickles the stream: torch, torchvision and PIL, not open_clip (timm, transformers, ...)."""
    (tmp_path / "stream.pkl").write_bytes(pickle.dumps(BatchStream(index, open_clip_transform(CFG, True), 16)))
    code = ("import pickle, sys; s = pickle.load(open(sys.argv[1], 'rb')); next(iter(s)); "
            "print(sorted(m for m in ('open_clip', 'pyarrow', 'timm', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "stream.pkl")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def peak_python_memory(index: ItemIndex) -> int:
    stream = BatchStream(index, open_clip_transform({**CFG, "size": 64}, False), 8, shuffle=False)
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
        peaks.append(peak_python_memory(build_index(sorted(root.glob("*.tar")), wanted, root, False)))
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
def test_clip_tokens_made_beside_workers_give_the_same_weights(index, tmp_path, one_torch_thread):
    """With data workers, a text learner's captions are tokenised in the training process (ParentTokens), without
    them inside the stream: the weights are the same."""
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
