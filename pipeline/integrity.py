"""Integrity of artifacts: what a manifest records about its files, and the checks that read it back.

At build time every file of an artifact is fsynced and recorded in the manifest (``files``: relative path -> size and
sha256) before the directory is renamed into place. Checks, cheapest first:
- the manifest parses, is a mapping and names its own stage and key (an empty or truncated manifest is corrupt);
- every recorded file exists with its recorded size; every Parquet file starts and ends with its magic bytes ``PAR1``
  (a truncated or overwritten footer), also in artifacts built before manifests recorded files;
- sha256 of each file: on every run for files up to ``RUN_HASH_MAX_BYTES`` (a digest is remembered per file size and
  mtime within a process), for every file in ``tailstudy verify``.
A manifest cannot switch these checks off: where it records files at all (every artifact built since checksums were
introduced, and every manifest of format >= 2), the files it records must be exactly the files there -- ``"files":
{}`` beside real files, a file missing from the record, or a record that is not a mapping is corruption. Only a
manifest with neither (built before checksums) gets the magic-bytes check alone.
A run treats a corrupt artifact as missing (it is rebuilt, with a line saying so); ``status`` and ``verify`` name it.

Study records (``studies/<name>/``: runs.parquet, subsets.parquet, spec.json) are rewritten by every run of their
study and have no manifest; `records_problem` checks that they parse (Parquet footers, or whole tables in ``verify``;
the JSON).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 2  # 2: "files" is required and complete
PARQUET_MAGIC = b"PAR1"
RUN_HASH_MAX_BYTES = 64 << 20
_digests: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path, sync: bool = False) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
        if sync:  # the bytes reach the disk before the artifact's rename publishes them
            os.fsync(fh.fileno())
    return digest.hexdigest()


def record_files(root: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {size, sha256}} of every file under `root` but the manifest, each fsynced."""
    records = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST):
        records[path.relative_to(root).as_posix()] = {"size": path.stat().st_size, "sha256": sha256_of(path, True)}
    return records


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(art_dir: Path, stage: str, key: str) -> tuple[dict | None, str | None]:
    """-> (manifest, None), or (None, what is wrong with it)."""
    path = art_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path}: missing manifest"
    except (ValueError, UnicodeDecodeError):
        return None, f"{path}: corrupt manifest (not valid JSON)"
    except OSError as err:
        return None, f"{path}: unreadable manifest ({err.strerror})"
    if not isinstance(data, dict) or data.get("stage") != stage or data.get("key") != key:
        return None, f"{path}: corrupt manifest (empty, or not the manifest of {stage}/{key})"
    return data, None


def parquet_problem(path: Path, size: int) -> str | None:
    if size < 12:
        return f"{path}: corrupt Parquet file (too small)"
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(size - 4)
        tail = fh.read(4)
    if head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        return f"{path}: corrupt Parquet file (no PAR1 magic at its start or end)"
    return None


def _digest(path: Path, stat: os.stat_result) -> str:
    memo = (str(path), stat.st_size, stat.st_mtime_ns)
    if memo not in _digests:
        _digests[memo] = sha256_of(path)
    return _digests[memo]


def file_problem(art_dir: Path, rel: str, record: dict | None, full: bool) -> str | None:
    """What is wrong with one file of an artifact (None: nothing found). `record` is None for old manifests."""
    path = art_dir / rel
    try:
        stat = path.stat()
    except OSError:
        return f"{path}: missing file"
    if record is not None and stat.st_size != record.get("size"):
        return f"{path}: size {stat.st_size:,} bytes, the manifest says {record.get('size'):,}"
    if path.suffix == ".parquet":
        problem = parquet_problem(path, stat.st_size)
        if problem:
            return problem
    if record is not None and "sha256" in record and (full or stat.st_size <= RUN_HASH_MAX_BYTES):
        if _digest(path, stat) != record["sha256"]:
            return f"{path}: checksum differs from the manifest's (the file changed after it was built)"
    return None


def artifact_problem(art_dir: Path, stage: str, key: str, full: bool = False) -> str | None:
    """The first thing wrong with an artifact directory, or None when it is sound (see the module docstring)."""
    manifest, problem = read_manifest(art_dir, stage, key)
    if problem:
        return problem
    files = manifest.get("files")
    if "files" in manifest or manifest.get("format", 1) >= MANIFEST_FORMAT:
        if not isinstance(files, dict) or not all(isinstance(r, dict) for r in files.values()):
            return f"{art_dir / MANIFEST}: corrupt manifest (its record of files is not a mapping of file records)"
        present = {p.relative_to(art_dir).as_posix() for p in art_dir.rglob("*") if p.is_file() and p.name != MANIFEST}
        unrecorded = sorted(present - set(files))
        if unrecorded:
            return f"{art_dir / unrecorded[0]}: not recorded in the manifest (the manifest was changed)"
        checks = [(rel, record) for rel, record in sorted(files.items())]
    else:  # built before manifests recorded their files: the Parquet files' magic bytes only
        checks = [(p.relative_to(art_dir).as_posix(), None) for p in sorted(art_dir.rglob("*.parquet"))]
    for rel, record in checks:
        problem = file_problem(art_dir, rel, record, full)
        if problem:
            return problem
    return None


def records_problem(study_dir: Path, full: bool = False) -> str | None:
    """The first thing wrong with a study's records (studies/<name>/), or None: each Parquet file has its magic bytes
    and a footer that parses (`full`: every row group reads), spec.json is a JSON mapping."""
    for path in sorted(study_dir.glob("*.parquet")):
        problem = parquet_problem(path, path.stat().st_size)
        if problem:
            return problem
        try:
            if full:
                pq.read_table(path)
            else:
                pq.read_metadata(path)
        except Exception as err:  # any failure to parse is corruption
            return f"{path}: corrupt Parquet file ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    spec = study_dir / "spec.json"
    if spec.exists():
        try:
            if not isinstance(json.loads(spec.read_text(encoding="utf-8")), dict):
                return f"{spec}: corrupt study record (not a JSON mapping)"
        except (ValueError, UnicodeDecodeError):
            return f"{spec}: corrupt study record (not valid JSON)"
    return None


def discard_unreadable(path: Path, load: Callable[[Path], Any], say: Callable[[str], None]) -> bool:
    """A resume file (e.g. a training checkpoint) that cannot be loaded is deleted, with a line saying so, so the work
    restarts from scratch instead of failing on every run. -> True when one was discarded."""
    if not path.is_file():
        return False
    try:
        load(path)
        return False
    except Exception as err:  # any failure to load means it cannot be resumed from
        path.unlink(missing_ok=True)
        say(f"{path}: unreadable ({type(err).__name__}); discarded, this work restarts from the beginning")
        return True
