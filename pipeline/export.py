"""Export a curated subset for another trainer (open_clip_train's `webdataset` and `csv` dataset types).

Rule: the export holds exactly what the curate stage chose — one training sample per row of the curate artifact's
subset.parquet (a sample drawn k times, e.g. by `balanced`, appears k times), with the level's caption (`a_cname`,
templates, ...), never the corpus's full caption — and the corpus's original image bytes (not re-encoded). Rows are
ordered by (sample_id, copy) and every file is written with fixed metadata, so the same subset gives the same bytes.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shlex
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from tailstudy.corpus.shards import ShardWriter, image_members
from tailstudy.errors import InputError
from tailstudy.store import Workspace

SHARD_SIZE = 10_000
CSV_NAME = "train.csv"
MANIFEST_NAME = "export.json"


@dataclass
class Subset:
    key: str
    study: str | None = None
    factor: str | None = None
    level: str | None = None


def _study_levels(ws: Workspace, study: str | None) -> list[dict]:
    studies = sorted((ws.root / "studies").glob("*/subsets.parquet"))
    rows = [r for path in studies for r in pq.read_table(path).to_pylist()]
    return [r for r in rows if study is None or r["study"] == study]


def resolve_subset(ws: Workspace, name: str, study: str | None = None) -> Subset:
    """A curate artifact key, or `factor=level` of a study in the workspace (--study picks one of several)."""
    if "=" not in name:
        if not ws.exists("curate", name):
            raise InputError(f"{name}: no curate artifact with this key in {ws.root} (name a subset by its key or "
                             f"by factor=level, e.g. caption=a_cname)")
        return Subset(name)
    factor, _, level = name.partition("=")
    found = [r for r in _study_levels(ws, study) if r["factor"] == factor and r["level"] == level]
    if not found:
        known = sorted({f"{r['factor']}={r['level']}" for r in _study_levels(ws, study)})
        where = f"study {study!r}" if study else str(ws.root)
        raise InputError(f"{name}: no such factor level in {where} (known: {', '.join(known) or 'none'})")
    keys = {r["subset_key"] for r in found}
    if len(keys) > 1:
        raise InputError(f"{name}: levels of several studies ({', '.join(sorted(r['study'] for r in found))}) have "
                         f"different subsets; pick one with --study")
    row = found[0]
    return Subset(row["subset_key"], row["study"], factor, level)


def subset_rows(ws: Workspace, subset: Subset) -> list[dict]:
    """The subset's rows (sample_id, copy, label, caption) in export order: by sample id, then copy."""
    table = pq.read_table(ws.artifact("curate", subset.key).path / "subset.parquet",
                          columns=["sample_id", "copy", "label", "caption"])
    return sorted(table.to_pylist(), key=lambda r: (str(r["sample_id"]), r["copy"]))


def corpus_dir(ws: Workspace, subset: Subset) -> Path:
    inputs = ws.artifact("curate", subset.key).manifest().get("inputs", {})
    path = ws.artifact("corpus", inputs.get("corpus", "")).path
    if not (path / "captions.parquet").is_file():
        raise InputError(f"{ws.artifact('curate', subset.key).path}: its corpus artifact {path} is missing")
    return path


def image_bytes(corpus: Path, sample_ids: set[str]) -> dict[str, tuple[str, bytes]]:
    """sample_id -> (extension, original image bytes), read from the corpus's webdataset shards by offset (their
    member indexes)."""
    index = pq.read_table(corpus / "captions.parquet", columns=["sample_id", "shard", "key"]).to_pylist()
    wanted = {r["key"]: str(r["sample_id"]) for r in index if str(r["sample_id"]) in sample_ids and r["key"]}
    shards = sorted({r["shard"] for r in index if r["key"] in wanted})
    found: dict[str, tuple[str, bytes]] = {}
    for shard in shards:
        path = corpus / "shards" / shard
        with open(path, "rb") as f:
            for key, ext, offset, size in image_members(path):
                if key in wanted and wanted[key] not in found:  # a sample's first image member, as the reader keeps
                    f.seek(offset)
                    found[wanted[key]] = ("jpg" if ext == "jpeg" else ext, f.read(size))
    missing = sorted(sample_ids - found.keys())
    if missing:
        raise InputError(f"{corpus}: {len(missing)} subset samples have no image in the shards (e.g. {missing[0]})")
    return found


def write_webdataset(out: Path, rows: list[dict], images: dict, shard_size: int = SHARD_SIZE) -> list[str]:
    """<index>.{png|jpg} + <index>.txt (+ .json: sample_id, copy, label) per sample; tar shards 00000.tar, ..."""
    names, sizes = [], {}
    for start in range(0, len(rows), shard_size):
        name = f"{start // shard_size:05d}.tar"
        with ShardWriter(out / name, index=False) as shard:  # what open_clip_train reads, nothing else
            for i, row in enumerate(rows[start:start + shard_size], start):
                ext, data = images[str(row["sample_id"])]
                meta = {"sample_id": str(row["sample_id"]), "copy": row["copy"], "label": row["label"]}
                shard.add(f"{i:09d}", {ext: data, "txt": row["caption"].encode("utf-8"),
                                       "json": json.dumps(meta, sort_keys=True).encode()})
        names.append(name)
        sizes[name] = min(shard_size, len(rows) - start)
    (out / "sizes.json").write_text(json.dumps(sizes, indent=1, sort_keys=True) + "\n")  # open_clip reads it
    return names


def write_csv(out: Path, rows: list[dict], images: dict) -> list[str]:
    """images/<index>.{png|jpg} + train.csv (filepath, caption; comma-separated, paths relative to OUT)."""
    (out / "images").mkdir()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["filepath", "caption", "sample_id", "copy", "label"])
    for i, row in enumerate(rows):
        ext, data = images[str(row["sample_id"])]
        rel = f"images/{i:09d}.{ext}"
        (out / rel).write_bytes(data)
        writer.writerow([rel, row["caption"], row["sample_id"], row["copy"], row["label"]])
    (out / CSV_NAME).write_text(buf.getvalue(), encoding="utf-8")
    return [CSV_NAME]


WRITERS: dict[str, Callable[[Path, list[dict], dict], list[str]]] = {"webdataset": write_webdataset, "csv": write_csv}


def train_command(fmt: str, out: Path, files: list[str], samples: int, model: str = "ViT-B-32") -> str:
    """The open_clip_train command line that trains on the export (csv: run from OUT, paths are relative to it)."""
    common = ["--model", model, "--batch-size", "64", "--epochs", "1", "--workers", "1", "--report-to", "none"]
    if fmt == "webdataset":
        last = len(files) - 1
        data = str(out / (files[0] if last == 0 else f"{{00000..{last:05d}}}.tar"))
        args = ["--dataset-type", "webdataset", "--train-data", data, "--train-num-samples", str(samples)]
        return shlex.join(["python", "-m", "open_clip_train.main", *args, *common])
    args = ["--dataset-type", "csv", "--train-data", CSV_NAME, "--csv-img-key", "filepath",
            "--csv-caption-key", "caption", "--csv-separator", ","]
    return f"cd {shlex.quote(str(out))} && " + shlex.join(["python", "-m", "open_clip_train.main", *args, *common])


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes, in path order (the manifest itself excluded)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def export_subset(ws: Workspace, name: str, fmt: str, out: Path, study: str | None = None) -> dict:
    """Write the subset to OUT (which must not exist or be empty) atomically; returns the manifest."""
    if fmt not in WRITERS:
        raise InputError(f"--format {fmt}: use {' | '.join(WRITERS)}")
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: exists and is not an empty folder (export into a new folder)")
    subset = resolve_subset(ws, name, study)
    rows = subset_rows(ws, subset)
    images = image_bytes(corpus_dir(ws, subset), {str(r["sample_id"]) for r in rows})
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
        files = WRITERS[fmt](tmp, rows, images)
        manifest = {"subset_key": subset.key, "study": subset.study, "factor": subset.factor, "level": subset.level,
                    "format": fmt, "samples": len(rows), "unique_samples": len(images),
                    "sample_ids": sorted(images), "sha256": tree_digest(tmp),
                    "open_clip_train": train_command(fmt, out, files, len(rows))}
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
