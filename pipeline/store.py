"""Workspace of content-addressed, atomically written stage artifacts.

A stage key hashes the stage name, the stage's code version, its normalised config slice and the keys of its upstream
artifacts (never paths), so the same inputs always land in the same directory: ``WORKSPACE/<stage>/<key>/``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.json"
KEY_LENGTH = 16


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_json_default)


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def stage_key(stage: str, version: int, config: Any, upstream: dict[str, str] | None = None) -> str:
    """Content address of a stage's output: same stage, code version, config and upstream keys -> same key."""
    payload = canonical_json({"stage": stage, "version": version, "config": config, "upstream": upstream or {}})
    return hashlib.sha256(payload.encode()).hexdigest()[:KEY_LENGTH]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A stage's output directory; `status` says how this run got it (ran / reused / shared) where that is known."""

    stage: str
    key: str
    path: Path
    status: str = ""
    label: str = ""

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())


class Workspace:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.duckdb"

    def artifact(self, stage: str, key: str) -> Artifact:
        return Artifact(stage, key, self.root / stage / key)

    def exists(self, stage: str, key: str) -> bool:
        return (self.root / stage / key / MANIFEST).is_file()

    def scratch_dir(self, stage: str, key: str) -> Path:
        """A stable per-key work directory for resumable stages (checkpoints, finished shards)."""
        path = self.root / stage / f".work-{key}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def build(self, stage: str, key: str, manifest: dict[str, Any], replace: bool = False) -> Iterator[Path]:
        """Write an artifact into a temp directory; rename it into place only when the body succeeds.

        The caller fills the yielded directory and may add entries to ``manifest``; on any exception the temp
        directory is removed and no artifact appears. With ``replace`` an existing artifact is swapped out.
        """
        final = self.root / stage / key
        tmp = self.root / stage / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        started = time.time()
        try:
            yield tmp
            manifest = {"stage": stage, "key": key, **manifest, "seconds": round(time.time() - started, 3)}
            atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=_json_default))
            if final.exists() and replace:
                stale = final.with_name(f".old-{key}-{uuid.uuid4().hex[:8]}")
                os.rename(final, stale)
                os.rename(tmp, final)
                shutil.rmtree(stale, ignore_errors=True)
            elif final.exists():  # a concurrent builder won the race; identical content by construction
                shutil.rmtree(tmp)
            else:
                os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        scratch = self.root / stage / f".work-{key}"
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)

    def list_artifacts(self) -> list[Artifact]:
        found = []
        if not self.root.is_dir():
            return found
        for stage_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for art_dir in sorted(stage_dir.iterdir()):
                if (art_dir / MANIFEST).is_file():
                    found.append(Artifact(stage_dir.name, art_dir.name, art_dir))
        return found

    def clean_stale_temps(self) -> int:
        """Remove temp directories left by killed runs (never finished artifacts, never resumable work dirs)."""
        removed = 0
        if self.root.is_dir():
            for stage_dir in self.root.iterdir():
                if stage_dir.is_dir():
                    for tmp in [*stage_dir.glob(".tmp-*"), *stage_dir.glob(".old-*")]:
                        shutil.rmtree(tmp, ignore_errors=True)
                        removed += 1
        return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_parquet(table: pa.Table, path: Path) -> None:
    """Deterministic, atomic Parquet write (no timestamps in the file: same table -> same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
