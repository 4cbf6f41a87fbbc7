"""Non-synthetic corpora, in two artifacts of the corpus stage:

1. the **source** artifact: what was ingested, alone: ``captions.parquet``, ``downloads.parquet`` (per-sample status),
   ``shards/``, and ``metadata.parquet`` (the input's extra columns) where there are any. Its key hashes the source
   options that can change its content and the input's digest. `tailstudy ingest` builds exactly this; a study
   reuses it.
2. the **study corpus** artifact: the source's files (hard links) plus what the study adds: the evaluation set from
   an ImageNet-style folder (``eval.parquet`` + ``shards/eval-00000.tar``, as the synthetic world writes them) and
   ``targets.json`` (the curate stage's target concepts). Its key hashes the source key, the eval folder's listing,
   the vocabulary and the targets.

Both keep the synthetic world's column contract, so match, curate, train and evaluate read them unchanged.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from tailstudy.corpus.readers import (CAPTION_COLUMNS, STATUS_SCHEMA, check_tar, class_dirs, class_resolver,
                                     decode_problem, default_metadata, file_fingerprint, image_files, image_member,
                                     iter_tar_samples, metadata_fields, read_folder_metadata, sample_fields,
                                     shard_paths, tree_fingerprint)
from tailstudy.corpus.shards import ShardWriter
from tailstudy.errors import InputError, SpecError
from tailstudy.store import canonical_json, stage_key, write_parquet
from tailstudy.vocab import load_vocab

SOURCE_VERSIONS = {"urls": 1, "webdataset": 1, "folder": 1}
STUDY_CORPUS_VERSION = 1
SHARD_SIZE = 5000
EVAL_SHARD = "eval-00000.tar"
# options that change how a download runs, never what it yields (kept out of the key)
RUNTIME_OPTIONS = {"processes", "threads", "retry_wait"}


# ---------------------------------------------------------------- keys

def input_fingerprint(cfg) -> str:
    if cfg.source == "urls":
        path = Path(cfg.path)
        if not path.is_file():
            raise InputError(f"{path}: no such URL list")
        return file_fingerprint(path)
    if cfg.source == "webdataset":
        return tree_fingerprint(shard_paths(cfg.path))
    root = Path(cfg.path)
    if not root.is_dir():
        raise InputError(f"{root}: no such image folder")
    meta = Path(cfg.metadata) if cfg.metadata else default_metadata(root)
    if meta is None or not meta.is_file():
        raise InputError(f"{meta or root}: no metadata file (put metadata.json, .jsonl, .tsv or .csv in the folder, "
                         "or set corpus.metadata)")
    return tree_fingerprint(image_files(root), root) + ":" + file_fingerprint(meta)


def source_config(cfg) -> dict:
    """What a source artifact's key hashes: its content-changing options and its input's digest (never a path)."""
    exclude = {"path", "metadata", "targets", "seed", *RUNTIME_OPTIONS}
    if cfg.source != "urls":
        exclude.add("image_size")  # stored as given; decoded at the study's size
    if cfg.source == "urls" and cfg.max_image_mb == type(cfg).model_fields["max_image_mb"].default:
        exclude.add("max_image_mb")  # the default cap keeps the keys of corpora built before the cap existed
    config = cfg.model_dump(mode="json", exclude=exclude)
    if cfg.source == "urls":
        config.update(cfg.columns())
    return {"source": cfg.source, "version": SOURCE_VERSIONS[cfg.source], "options": config,
            "input": input_fingerprint(cfg)}


def source_key(cfg) -> str:
    return stage_key("corpus", SOURCE_VERSIONS[cfg.source], source_config(cfg))


def vocabulary_fingerprint(vocabulary: str) -> str:
    """The vocabulary's content (eval class folders and targets resolve against it), as the vocab stage hashes it."""
    vocab = load_vocab(vocabulary)
    return hashlib.sha256(canonical_json([vocab.name, vocab.content()]).encode()).hexdigest()[:32]


def study_corpus_config(spec) -> dict:
    """The study corpus key's config slice for a non-synthetic corpus (see the module doc)."""
    cfg = spec.corpus
    if not spec.evaluate.folder:
        raise SpecError(f"evaluate.folder: a {cfg.source} corpus needs an ImageNet-style evaluation folder "
                        "(one sub-folder of images per class, named by wnid or class name)")
    folder = Path(spec.evaluate.folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such evaluation folder (evaluate.folder)")
    # "eval": the evaluate section's old name, kept: the study corpus key hashes this dict (keys are a promise)
    return {"version": STUDY_CORPUS_VERSION, "source": source_key(cfg), "image_size": cfg.image_size,
            "targets": cfg.targets, "vocabulary": vocabulary_fingerprint(spec.vocabulary),
            "eval": {"folder": tree_fingerprint(image_files(folder), folder), "per_class": spec.evaluate.per_class}}


# ---------------------------------------------------------------- per-sample status rows

def status_row(**values) -> dict:
    row = {name: None for name in STATUS_SCHEMA.names}
    row.update(values)
    return row


def status_table(rows: list[dict]) -> pa.Table:
    return pa.table({name: pa.array([r[name] for r in rows], STATUS_SCHEMA.field(name).type)
                     for name in STATUS_SCHEMA.names}, schema=STATUS_SCHEMA)


def status_summary(rows: dict[str, list]) -> dict:
    """Counts for a manifest and the CLI: samples, successes, success rate, failures by kind, bytes."""
    n = len(rows["sample_id"])
    ok = sum(1 for s in rows["status"] if s == "success")
    kinds: dict[str, int] = {}
    for kind in rows["error_kind"]:
        if kind:
            kinds[kind] = kinds.get(kind, 0) + 1
    return {"samples": n, "success": ok, "success_rate": round(ok / n, 4) if n else 0.0,
            "errors": dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))),
            "bytes": int(sum(b for b in rows["bytes"] if b)),
            "retried_ok": sum(1 for s, a in zip(rows["status"], rows["attempts"]) if s == "success" and (a or 0) > 1)}


def summarize(rows: list[dict]) -> dict:
    return status_summary({name: [r[name] for r in rows] for name in STATUS_SCHEMA.names})


def _image_size(data: bytes) -> tuple[Optional[str], Optional[tuple[int, int]]]:
    problem = decode_problem(data)
    if problem:
        return problem, None
    with Image.open(io.BytesIO(data)) as img:
        return None, img.size


class _ShardSink:
    """Writes samples into numbered shards of SHARD_SIZE (atomic per shard, inside the artifact's temp dir)."""

    def __init__(self, shard_dir: Path, prefix: str):
        self.dir, self.prefix, self.count, self.writer, self.name = shard_dir, prefix, 0, None, ""
        shard_dir.mkdir(parents=True, exist_ok=True)

    def add(self, key: str, members: dict[str, bytes]) -> str:
        if self.writer is None or self.count % SHARD_SIZE == 0:
            self.close()
            self.name = f"{self.prefix}-{self.count // SHARD_SIZE:05d}.tar"
            self.writer = ShardWriter(self.dir / self.name)
        self.writer.add(key, members)
        self.count += 1
        return self.name

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _add_sample(sink: _ShardSink, captions: dict[str, list], prefix: str, sample_id: str, fields: dict, ext: str,
                data: bytes, size: tuple[int, int]) -> dict:
    """One decodable sample (image bytes as given + its caption) into the shards and the caption rows, under a new
    key (prefix + its row number); returns its success status row."""
    key = f"{prefix}{len(captions['sample_id']):09d}"
    shard = sink.add(key, {ext: data, "txt": fields["caption"].encode()})
    for name, value in (("sample_id", sample_id), ("caption", fields["caption"]), ("title", fields["title"]),
                        ("tags", fields["tags"]), ("description", fields["description"]),
                        ("url", fields["url"]), ("shard", shard), ("key", key)):
        captions[name].append(value)
    return status_row(sample_id=sample_id, url=fields["url"], status="success", attempts=1, bytes=len(data),
                      width=size[0], height=size[1], original_width=size[0], original_height=size[1], shard=shard,
                      key=key)


def _write_source_tables(source: str, out: Path, captions: dict[str, list], status: list[dict]) -> dict:
    if not captions["sample_id"]:
        errors = summarize(status)["errors"]
        raise InputError(f"{source}: no usable image ({', '.join(f'{k} x{v}' for k, v in errors.items()) or 'empty'})")
    table = pa.table({name: pa.array(captions[name], pa.string()) for name in CAPTION_COLUMNS})
    write_parquet(table, out / "captions.parquet")
    write_parquet(status_table(status), out / "downloads.parquet")
    return summarize(status)


# ---------------------------------------------------------------- source: webdataset

def build_webdataset(cfg, out: Path, progress=None) -> dict:
    """Copy existing shards' samples (image bytes as they are) into the artifact's shards; one status row each."""
    paths = shard_paths(cfg.path)
    for i, path in enumerate(paths):  # every shard is a tar before anything is written
        check_tar(path, i, len(paths))
    sink = _ShardSink(out / "shards", "train")
    captions: dict[str, list] = {name: [] for name in CAPTION_COLUMNS}
    status: list[dict] = []
    seen: dict[str, str] = {}
    try:
        for path in paths:
            for key, members in iter_tar_samples(path):
                if key in seen:
                    raise InputError(f"{path}: duplicate sample key {key!r} (also in {seen[key]})")
                seen[key] = path.name
                fields = sample_fields(members)
                ext = image_member(members)
                if ext is None:
                    status.append(status_row(sample_id=key, url=fields["url"], status="no_image", error_kind="no_image",
                                             error_message=f"no image member in {path.name}", attempts=1))
                    continue
                problem, size = _image_size(members[ext])
                if problem:
                    status.append(status_row(sample_id=key, url=fields["url"], status="failed_to_decode",
                                             error_kind="decode", error_message=problem, attempts=1))
                    continue
                status.append(_add_sample(sink, captions, "w", key, fields, ext, members[ext], size))
                if progress:
                    progress(1, None)  # the number of samples is not known up front
    finally:
        sink.close()
    return _write_source_tables(cfg.path, out, captions, status)


# ---------------------------------------------------------------- source: folder (ImageNet-Captions style)

def _folder_files(root: Path, meta: dict, meta_path: Path) -> list[tuple[str, Path]]:
    """(class folder name, image) of every image under `root`'s class folders; a bare file name that the metadata
    uses must name one image only."""
    dirs = class_dirs(root)
    if not dirs:
        raise InputError(f"{root}: no class folders (images go in one sub-folder per class)")
    files = [(d.name, f) for d in dirs for f in image_files(d)]
    by_base: dict[str, str] = {}
    for _cls, f in files:
        rel = f.relative_to(root).as_posix()
        if f.name in by_base and f.name in meta:
            raise InputError(f"{meta_path}: filename {f.name!r} is ambiguous ({by_base[f.name]} and {rel}); "
                             "use paths relative to the folder")
        by_base[f.name] = rel
    return files


def _copy_folder(files: list[tuple[str, Path]], root: Path, meta: dict, meta_path: Path, out: Path, progress):
    """Every image with a metadata row (by relative path, else file name) into the shards; returns the caption rows,
    status rows, each sample's class folder and the metadata rows used."""
    sink = _ShardSink(out / "shards", "train")
    captions: dict[str, list] = {name: [] for name in CAPTION_COLUMNS}
    status: list[dict] = []
    classes: dict[str, list] = {"sample_id": [], "folder": []}
    used: set[str] = set()
    try:
        for cls, f in files:
            rel = f.relative_to(root).as_posix()
            sample_id = rel.rsplit(".", 1)[0]
            row_key = rel if rel in meta else (f.name if f.name in meta else None)
            if row_key is None:
                status.append(status_row(sample_id=sample_id, status="no_metadata", error_kind="no_metadata",
                                         error_message=f"{rel} has no row in {meta_path.name}", attempts=1))
                continue
            used.add(row_key)
            data = f.read_bytes()
            problem, size = _image_size(data)
            fields = metadata_fields(meta[row_key])
            if problem:
                status.append(status_row(sample_id=sample_id, url=fields["url"], status="failed_to_decode",
                                         error_kind="decode", error_message=problem, attempts=1))
                continue
            ext = f.suffix.lower().lstrip(".")
            status.append(_add_sample(sink, captions, "f", sample_id, fields, "jpg" if ext == "jpeg" else ext, data,
                                      size))
            classes["sample_id"].append(sample_id)
            classes["folder"].append(cls)
            if progress:
                progress(1, len(files))
    finally:
        sink.close()
    return captions, status, classes, used


def build_folder(cfg, out: Path, progress=None) -> dict:
    """Class folders of images + a metadata file of their captions -> shards, caption and status tables, and
    classes.parquet (each sample's folder); a metadata row without its image is a `missing_file` status row."""
    root = Path(cfg.path)
    meta_path = Path(cfg.metadata) if cfg.metadata else default_metadata(root)
    if meta_path is None:
        raise InputError(f"{root}: no metadata file (metadata.json, .jsonl, .tsv or .csv; or set corpus.metadata)")
    meta = read_folder_metadata(meta_path)
    files = _folder_files(root, meta, meta_path)
    captions, status, classes, used = _copy_folder(files, root, meta, meta_path, out, progress)
    for name in sorted(set(meta) - used):
        status.append(status_row(sample_id=name.rsplit(".", 1)[0], status="missing_file", error_kind="missing_file",
                                 error_message=f"{meta_path.name} lists {name}, the folder has no such image",
                                 attempts=0))
    summary = _write_source_tables(cfg.path, out, captions, status)
    write_parquet(pa.table({k: pa.array(v, pa.string()) for k, v in classes.items()}), out / "classes.parquet")
    return summary


# ---------------------------------------------------------------- evaluation folder (ImageNet-style)

def build_eval(folder: Path, vocab, per_class: int, shard_dir: Path) -> tuple[pa.Table, dict]:
    """At most `per_class` decodable images per class folder -> shards/eval-00000.tar and the eval table."""
    resolve = class_resolver(vocab)
    dirs = class_dirs(folder)
    if not dirs:
        raise InputError(f"{folder}: no class folders in the evaluation folder")
    owner: dict[int, str] = {}
    plan = []
    for d in dirs:
        cid = resolve(d.name)
        if cid is None:
            raise InputError(f"{d}: eval class folder {d.name!r} is not a class of vocabulary {vocab.name} "
                             "(name class folders by wnid/key or class name)")
        if cid in owner:
            raise InputError(f"{d}: eval class folders {owner[cid]!r} and {d.name!r} are the same class")
        owner[cid] = d.name
        plan.append((cid, d))
    rows: dict[str, list] = {"sample_id": [], "concept_id": [], "shard": [], "key": []}
    skipped = 0
    shard_dir.mkdir(parents=True, exist_ok=True)
    with ShardWriter(shard_dir / EVAL_SHARD) as writer:
        for cid, d in sorted(plan):
            taken = 0
            for f in image_files(d):
                if taken == per_class:
                    break
                data = f.read_bytes()
                if decode_problem(data):
                    skipped += 1
                    continue
                ext = f.suffix.lower().lstrip(".")
                key = f"e{cid:04d}_{taken:05d}"
                writer.add(key, {"jpg" if ext == "jpeg" else ext: data})
                for name, value in (("sample_id", f"eval/{f.relative_to(folder).as_posix()}"), ("concept_id", cid),
                                    ("shard", EVAL_SHARD), ("key", key)):
                    rows[name].append(value)
                taken += 1
    if not rows["key"]:
        raise InputError(f"{folder}: no decodable images in the evaluation folder")
    table = pa.table({"sample_id": pa.array(rows["sample_id"], pa.string()),
                      "concept_id": pa.array(rows["concept_id"], pa.int32()),
                      "shard": pa.array(rows["shard"], pa.string()), "key": pa.array(rows["key"], pa.string())})
    return table, {"eval_samples": table.num_rows, "eval_classes": len(plan), "eval_skipped_undecodable": skipped}


def resolve_targets(targets, vocab, eval_ids: list[int]) -> list[int]:
    if targets == "vocabulary":
        return sorted(c.concept_id for c in vocab.concepts)
    if targets == "eval":
        return sorted(set(eval_ids))
    resolve = class_resolver(vocab)
    out = []
    for name in targets:
        cid = resolve(str(name))
        if cid is None:
            raise SpecError(f"corpus.targets: unknown class {name!r} (not in vocabulary {vocab.name})")
        out.append(cid)
    return sorted(set(out))


# ---------------------------------------------------------------- the study corpus

def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def assemble_study_corpus(source_dir: Path, out: Path, spec, vocab) -> dict:
    """Source artifact (hard-linked) + evaluation set + targets -> a corpus the later stages read unchanged."""
    for path in sorted(source_dir.rglob("*")):
        if path.is_file() and path.name != "manifest.json":
            link_or_copy(path, out / path.relative_to(source_dir))
    eval_table, eval_stats = build_eval(Path(spec.evaluate.folder), vocab, spec.evaluate.per_class, out / "shards")
    write_parquet(eval_table, out / "eval.parquet")
    targets = resolve_targets(spec.corpus.targets, vocab, eval_table.column("concept_id").to_pylist())
    (out / "targets.json").write_text(json.dumps({"targets": targets, "rule": spec.corpus.targets}))
    if (out / "classes.parquet").is_file():  # folder source: the class folder of each sample, as a concept
        classes = pq.read_table(out / "classes.parquet")
        resolve = class_resolver(vocab)
        write_parquet(pa.table({"sample_id": classes.column("sample_id"),
                                "concept_id": pa.array([resolve(f) for f in classes.column("folder").to_pylist()],
                                                       pa.int32())}), out / "truth.parquet")
    captions = pq.read_metadata(out / "captions.parquet").num_rows
    return {"samples": captions, "targets": len(targets), **eval_stats}
