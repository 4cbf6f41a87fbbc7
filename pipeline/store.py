"""Workspace of content-addressed, atomically written stage artifacts.

A stage key hashes the stage name, the stage's code version, its normalised config slice and the keys of its upstream
artifacts (never paths), so the same inputs always land in the same directory: ``WORKSPACE/<stage>/<key>/``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
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
        from tailstudy.integrity import read_manifest

        found, problem = read_manifest(self.path, self.stage, self.key)
        if problem:
            from tailstudy.errors import InputError

            raise InputError(problem)
        return found


TEMP_NAME = re.compile(r"^\.(?:tmp|old)-(?P<key>.+)-[0-9a-f]+$")


class Workspace:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self._reported: set[tuple[str, str]] = set()

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.duckdb"

    def artifact(self, stage: str, key: str) -> Artifact:
        return Artifact(stage, key, self.root / stage / key)

    def exists(self, stage: str, key: str) -> bool:
        """A sound artifact is there (tailstudy.integrity's run-time checks); a corrupt one counts as missing, so it is
        rebuilt -- said once per process on stderr."""
        if not (self.root / stage / key / MANIFEST).is_file():
            return False
        problem = self.problem(stage, key)
        if problem and (stage, key) not in self._reported:
            self._reported.add((stage, key))
            from tailstudy.locks import stderr_say

            stderr_say(f"corrupt artifact {stage}/{key}: {problem}; it will be rebuilt")
        return problem is None

    def problem(self, stage: str, key: str, full: bool = False) -> str | None:
        from tailstudy.integrity import artifact_problem

        return artifact_problem(self.root / stage / key, stage, key, full)

    def scratch_dir(self, stage: str, key: str, fresh: bool = False) -> Path:
        """A stable per-key work directory for resumable stages (checkpoints, finished shards); `fresh` empties it
        first (a forced rebuild never resumes)."""
        path = self.root / stage / f".work-{key}"
        if fresh and path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def lock(self, timeout: float | None = None, say=None):
        """The workspace lock, held by a run (or match / ingest) from start to end: a second one waits for it."""
        from tailstudy.locks import file_lock
        from tailstudy.preflight import check_workspace

        check_workspace(self.root)  # a file or a read-only directory: one line before any work
        return file_lock(self.root / ".lock", f"workspace {self.root}", timeout, say)

    def artifact_lock(self, stage: str, key: str):
        """Held while an artifact is built (and its work directory used): one builder per artifact at a time."""
        from tailstudy.locks import file_lock, stderr_say

        return file_lock(self.lock_path(stage, key), f"artifact {stage}/{key}", None, stderr_say)

    def lock_path(self, stage: str, key: str) -> Path:
        """Artifact locks live apart from the artifacts (WORKSPACE/.locks/STAGE/KEY.lock): a stage directory holds
        only artifacts, temps and work directories."""
        return self.root / ".locks" / stage / f"{key}.lock"

    @contextlib.contextmanager
    def build(self, stage: str, key: str, manifest: dict[str, Any], replace: bool = False) -> Iterator[Path]:
        """Write an artifact into a temp directory; rename it into place only when the body succeeds.

        The caller fills the yielded directory and may add entries to ``manifest``; on any exception the temp
        directory is removed and no artifact appears. With ``replace`` an existing artifact is swapped out.
        """
        from tailstudy.integrity import fsync_dir, record_files

        final = self.root / stage / key
        tmp = self.root / stage / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        started = time.time()
        try:
            yield tmp
            manifest = {"stage": stage, "key": key, **manifest, "seconds": round(time.time() - started, 3),
                        "files": record_files(tmp)}
            atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=_json_default))
            if final.exists() and (replace or self.problem(stage, key) is not None):  # forced, or corrupt
                stale = final.with_name(f".old-{key}-{uuid.uuid4().hex[:8]}")
                os.rename(final, stale)
                os.rename(tmp, final)
                shutil.rmtree(stale, ignore_errors=True)
            elif final.exists():  # a concurrent builder won the race; identical content by construction
                shutil.rmtree(tmp)
            else:
                os.rename(tmp, final)
            fsync_dir(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        scratch = self.root / stage / f".work-{key}"
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)

    def produce(self, stage: str, key: str, body, manifest: dict[str, Any], force: bool = False) -> str:
        """Build (stage, key) under its artifact lock unless a sound one exists -> "ran" or "reused". `body(out)`
        fills the temp directory and returns manifest entries; a concurrent builder that finished first wins."""
        if self.exists(stage, key) and not force:
            return "reused"
        with self.artifact_lock(stage, key):
            if self.exists(stage, key) and not force:
                return "reused"
            with self.build(stage, key, manifest, replace=force) as out:
                manifest.update(body(out))
        return "ran"

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
        """Remove temp directories left by killed runs: only those whose artifact lock is free, i.e. whose builder is
        gone (never a live builder's temp, never finished artifacts, never resumable work dirs)."""
        from tailstudy.locks import is_free

        removed = 0
        if self.root.is_dir():
            for stage_dir in self.root.iterdir():
                if stage_dir.is_dir():
                    for tmp in [*stage_dir.glob(".tmp-*"), *stage_dir.glob(".old-*")]:
                        found = TEMP_NAME.match(tmp.name)
                        if found and is_free(self.lock_path(stage_dir.name, found["key"])):
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
