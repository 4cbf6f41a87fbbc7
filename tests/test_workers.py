"""Torch-free data workers (tailstudy.workers, tailstudy.data.LightStream): the same batches as the DataLoader path
(images bit for bit with the same strides, items, labels, tokens) for any worker count, in train and eval mode; the
eval replica is torchvision's Resize + CenterCrop; a worker process never imports torch; early stops and errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from tailstudy.augment import ResizeCentreCrop, fast_eval_transform
from tailstudy.corpus.shards import ShardWriter, encode_png
from tailstudy.data import (BatchStream, LightStream, build_index, images_on, make_loader, open_batches,
                            open_clip_transform)
from tailstudy.workers import DataWorkers, ImageJob

CFG = {"size": 24, "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3), "interpolation": "bicubic",
       "resize_mode": "shortest"}


def lengths(texts: list[str]) -> torch.Tensor:  # a stand-in tokenizer
    return torch.tensor([[len(t), t.count("a")] for t in texts])


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """70 images of mixed sizes and modes in 3 shards; every fourth sample twice (two captions)."""
    root = tmp_path_factory.mktemp("light")
    rng = np.random.default_rng(3)
    wanted = {}
    for s in range(3):
        with ShardWriter(root / f"train-{s:05d}.tar") as w:
            for i in range(s * 25, min(s * 25 + 25, 70)):
                h, wd = [(24, 24), (30, 20), (20, 41), (64, 48), (23, 25)][i % 5]
                img = Image.fromarray(rng.integers(0, 256, (h, wd, 3), dtype=np.uint8))
                img = [img, img.convert("L"), img.convert("RGBA")][i % 3]
                buf = encode_png(np.asarray(img)) if img.mode == "RGB" else _png(img)
                w.add(f"k{i:04d}", {"png": buf})
                wanted[f"k{i:04d}"] = [(i % 4, f"a caption {i}")] + ([(i % 4, f"another {i}")] if i % 4 == 0 else [])
    return build_index(sorted(root.glob("*.tar")), wanted, root, with_captions=True)


def _png(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def reference(index, train: bool, epochs: int = 2) -> list[dict]:
    stream = BatchStream(index, open_clip_transform(CFG, train), 16, 5, 0, train, lengths if train else None)
    loader = make_loader(stream, 0)
    return [b for _ in range(epochs if train else 1) for b in loader]


def assert_same(expected: list[dict], got: list[dict]) -> None:
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]) and a[key].stride() == b[key].stride(), key


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("memo", [False, True])
def test_light_batches_are_the_dataloader_batches(index, workers, memo, one_torch_thread):
    expected = reference(index, True)
    light = open_batches(index, open_clip_transform(CFG, True), 16, workers, 5, 0, True, lengths, memo=memo)
    try:
        assert isinstance(light, LightStream)
        assert_same(expected, [b for _ in range(2) for b in light])
    finally:
        light.close()


def test_batches_for_a_gpu_convert_where_the_model_is(index, one_torch_thread):
    """Feeding a GPU, a LightStream hands over uint8 pixels; images_on converts them on the device to the same floats
    (checked here on the CPU: the same operations)."""
    expected = reference(index, True, epochs=1)
    light = open_batches(index, open_clip_transform(CFG, True), 16, 0, 5, 0, True, lengths, pin=True)
    try:
        got = list(light)
    finally:
        light.close()
    assert all(b["images"].dtype == torch.uint8 for b in got)
    converted = [{**{k: v for k, v in b.items() if k != "normalize"}, "images": images_on(b, torch.device("cpu"))}
                 for b in got]
    assert_same(expected, converted)


def test_light_eval_batches_are_the_dataloader_batches(index, one_torch_thread):
    light = open_batches(index, open_clip_transform(CFG, False), 16, 2, shuffle=False)
    try:
        assert_same(reference(index, False), list(light))
    finally:
        light.close()


@pytest.mark.parametrize("size,crop", [(24, 24), (33, 33), ((20, 28), (20, 28)), ((30, 30), (17, 21)), (16, (15, 9))])
def test_eval_replica_is_torchvisions_resize_and_centre_crop(size, crop):
    resize = T.Resize(size, interpolation=T.InterpolationMode.BICUBIC)
    steps = [resize, T.CenterCrop(crop)]
    fast = fast_eval_transform(steps)
    assert isinstance(fast, ResizeCentreCrop)
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(24, 24), (30, 20), (20, 41), (7, 9), (200, 20), (33, 32), (31, 64), (16, 15)]):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        img = [img, img.convert("L"), img.convert("P"), img.convert("RGBA")][k % 4]
        expected = T.Compose([*steps, lambda im: im.convert("RGB")])(img)
        assert np.array_equal(np.asarray(expected), np.asarray(fast(img))), (size, crop, h, w)


def test_eval_replica_only_where_the_crop_never_pads():
    bicubic = T.InterpolationMode.BICUBIC
    assert fast_eval_transform([T.Resize(24, interpolation=bicubic), T.CenterCrop(32)]) is None
    assert fast_eval_transform([T.Resize(24, max_size=40), T.CenterCrop(24)]) is None
    assert fast_eval_transform([T.Resize(24), T.CenterCrop(24), T.ColorJitter(0.1)]) is None


def test_a_light_worker_imports_no_torch(index):
    job = ImageJob(index, fast_eval_transform([T.Resize(24), T.CenterCrop(24)]))
    workers = DataWorkers(job, 1)
    try:
        (_task, images), = list(workers.map([(np.array([0, 5, 9]), None)]))
        assert images.shape == (3, 24, 24, 3) and images.dtype == np.uint8
        probe = "sorted(m for m in ('torch', 'torchvision', 'open_clip', 'pyarrow') if m in __import__('sys').modules)"
        assert workers.pool.submit(eval, probe).result() == []
    finally:
        workers.close()


def test_stopping_mid_epoch_then_the_next_epoch(index, one_torch_thread):
    """A run capped by max_steps leaves an epoch early: the next epoch's batches are still that epoch's."""
    expected = reference(index, True)
    light = open_batches(index, open_clip_transform(CFG, True), 16, 2, 5, 0, True, lengths)
    try:
        first = iter(light)
        assert_same(expected[:2], [next(first), next(first)])
        first.close()
        assert_same(expected[len(light):], list(light))
    finally:
        light.close()


def test_a_broken_image_fails_the_run_in_the_parent(tmp_path):
    with ShardWriter(tmp_path / "s.tar") as w:
        w.add("good", {"png": encode_png(np.zeros((24, 24, 3), np.uint8))})
        w.add("bad", {"png": b"\x89PNG not an image"})
    index = build_index([tmp_path / "s.tar"], {"good": [(0, "")], "bad": [(0, "")]}, tmp_path, False)
    light = open_batches(index, open_clip_transform(CFG, False), 2, 1, shuffle=False)
    try:
        with pytest.raises(Exception, match="cannot identify image"):
            list(light)
    finally:
        light.close()
