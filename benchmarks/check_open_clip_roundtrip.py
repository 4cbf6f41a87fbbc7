"""Do a workspace's CLIP checkpoints give, in open_clip alone, the zero-shot top-1 that the evaluate stage recorded?

    .venv/bin/python benchmarks/check_open_clip_roundtrip.py WORKSPACE [--limit N]

For every evaluate artifact of a CLIP run in WORKSPACE (read only): loads the run's export with
`open_clip.create_model_and_transforms("local-dir:" + RUN_DIR)` and `open_clip.get_tokenizer`, builds the zero-shot
classifier with `open_clip.build_zero_shot_classifier` over the evaluated classes (names from the run's
per_class.parquet) and the prompts the evaluate stage used (`eval.prompts`: open_clip's 80 OpenAI ImageNet templates,
or "a {name}"), runs the corpus's evaluation images (eval.parquet rows of those classes, read from its tar shards)
through open_clip's returned preprocess, and prints our recorded top-1, open_clip's and the difference. tailstudy is
not imported: what is checked is that the files stand on their own. Exit status 1 if a difference exceeds --tolerance.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import torch
from PIL import Image


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def clip_runs(ws: Path):
    """-> (evaluate dir, train dir, corpus dir) for each evaluated CLIP run (one with an open_clip export)."""
    for eval_dir in sorted((ws / "evaluate").iterdir()):
        if not (eval_dir / "manifest.json").is_file():
            continue
        train_dir = ws / "train" / manifest(eval_dir)["inputs"]["train"]
        if not (train_dir / "open_clip_config.json").is_file():
            continue  # a supervised learner: nothing for open_clip to load
        subset = manifest(train_dir)["inputs"]["subset"]
        corpus_dir = ws / "corpus" / manifest(ws / "curate" / subset)["inputs"]["corpus"]
        yield eval_dir, train_dir, corpus_dir


def eval_images(corpus_dir: Path, class_ids: list[int]) -> tuple[list[bytes], list[int]]:
    """The encoded evaluation images of these classes and their class index, in eval.parquet order."""
    rows = [r for r in pq.read_table(corpus_dir / "eval.parquet", columns=["concept_id", "shard", "key"]).to_pylist()
            if r["concept_id"] in set(class_ids)]
    wanted = {(r["shard"], r["key"]) for r in rows}
    data = {}
    for shard in sorted({r["shard"] for r in rows}):
        with tarfile.open(corpus_dir / "shards" / shard) as tar:
            for member in tar:
                key, _, ext = member.name.rpartition(".")
                if (shard, key) in wanted and ext.lower() in ("jpg", "jpeg", "png", "webp"):
                    data[(shard, key)] = tar.extractfile(member).read()
    index = {c: i for i, c in enumerate(class_ids)}
    return [data[(r["shard"], r["key"])] for r in rows], [index[r["concept_id"]] for r in rows]


def templates(prompts: str) -> list[str]:
    if prompts == "templates":
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        return list(OPENAI_IMAGENET_TEMPLATES)
    return ["a {}"]


@torch.no_grad()
def open_clip_top1(run_dir: Path, names: list[str], prompts: str, images: list[bytes], labels: list[int],
                   batch_size: int) -> float:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{run_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{run_dir}")
    model.eval()
    classifier = open_clip.build_zero_shot_classifier(model, tokenizer, names, templates(prompts),
                                                      num_classes_per_batch=10, device="cpu")
    correct = 0
    for start in range(0, len(images), batch_size):
        x = torch.stack([preprocess(Image.open(io.BytesIO(b))) for b in images[start:start + batch_size]])
        pred = (model.encode_image(x, normalize=True) @ classifier).argmax(1)
        correct += int((pred == torch.tensor(labels[start:start + batch_size])).sum())
    return correct / len(images)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("workspace", type=Path)
    p.add_argument("--tolerance", type=float, default=0.005)
    p.add_argument("--limit", type=int, default=None, help="check at most this many runs")
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    worst, cache = 0.0, {}
    runs = list(clip_runs(args.workspace))[:args.limit]
    if not runs:
        raise SystemExit(f"{args.workspace}: no evaluated CLIP run with an open_clip export")
    for eval_dir, train_dir, corpus_dir in runs:
        per_class = pq.read_table(eval_dir / "per_class.parquet", columns=["concept_id", "name"]).to_pylist()
        class_ids, names = [r["concept_id"] for r in per_class], [r["name"] for r in per_class]
        if (corpus_dir, tuple(class_ids)) not in cache:
            cache[(corpus_dir, tuple(class_ids))] = eval_images(corpus_dir, class_ids)
        images, labels = cache[(corpus_dir, tuple(class_ids))]
        recorded = manifest(eval_dir)
        ours = recorded["metrics"]["top1"]
        theirs = open_clip_top1(train_dir, names, recorded["inputs"]["eval"]["prompts"], images, labels,
                                args.batch_size)
        worst = max(worst, abs(theirs - ours))
        print(f"train {train_dir.name} evaluate {eval_dir.name}: {len(images)} images, {len(names)} classes, "
              f"ours {ours:.4f}, open_clip {theirs:.4f}, difference {theirs - ours:+.4f}", flush=True)
    print(f"{len(runs)} CLIP runs; largest |difference| {worst:.4f} (tolerance {args.tolerance})")
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
