"""Workspace of content-addressed, atomically written stage artifacts.

A stage key hashes the stage name, the stage's code version, its normalised config slice and the keys of its upstream
artifacts (never paths), so the same inputs always land in the same directory: ``WORKSPACE/<stage>/<key>/``.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from tailstudy.errors import InputError
from tailstudy.integrity import MANIFEST_FORMAT, artifact_problem, fsync_dir, read_manifest, record_files, records_problem
from tailstudy.locks import file_lock, is_free, stderr_say

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
        found, problem = read_manifest(self.path, self.stage, self.key)
        if problem:
            raise InputError(problem)
        return found


TEMP_NAME = re.compile(r"^\.(?:tmp|old)-(?P<key>.+)-[0-9a-f]+$")
DEFAULT_WORKSPACE = "workspace"


def workspace_path(path: str | Path | None = None) -> Path:
    """The workspace a command or an entry flow means: `path`, else $TAILSTUDY_WORKSPACE, else ./workspace."""
    return Path(path or os.environ.get("TAILSTUDY_WORKSPACE") or DEFAULT_WORKSPACE)


def check_workspace(root: str | Path) -> Path:
    """The workspace is a directory this process can write (created when missing) -> its resolved path."""
    path = Path(root).resolve()
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: the workspace path is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{path}: cannot create the workspace ({err.strerror})") from None
    probe = path / f".write-probe-{os.getpid()}"
    try:  # a real write: os.access says yes to root on a read-only mount
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise InputError(f"{path}: the workspace is not writable ({err.strerror})") from None
    return path


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
            stderr_say(f"corrupt artifact {stage}/{key}: {problem}; it will be rebuilt")
        return problem is None

    def problem(self, stage: str, key: str, full: bool = False) -> str | None:
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
        check_workspace(self.root)  # a file or a read-only directory: one line before any work
        return self._locked(file_lock(self.root / ".lock", f"workspace {self.root}", timeout, say))

    @contextlib.contextmanager
    def _locked(self, lock) -> Iterator[None]:
        with lock:
            self.clean_stale_temps()  # whoever holds the workspace first clears what killed writers left
            yield

    def artifact_lock(self, stage: str, key: str):
        """Held while an artifact is built (and its work directory used): one builder per artifact at a time."""
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
        final = self.root / stage / key
        tmp = self.root / stage / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        started = time.time()
        try:
            yield tmp
            manifest = {"stage": stage, "key": key, **manifest, "seconds": round(time.time() - started, 3),
                        "files": record_files(tmp), "format": MANIFEST_FORMAT}
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
        except BaseException as err:
            written = tree_bytes(tmp) if is_disk_full(err) else 0
            shutil.rmtree(tmp, ignore_errors=True)  # no partial artifact, whatever went wrong
            if is_disk_full(err):
                raise disk_full_error(tmp, written) from None
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

    def record_problems(self, full: bool = False) -> list[str]:
        """What is wrong with the study records (studies/<name>/): one line per corrupt study."""
        studies = self.root / "studies"
        found = [records_problem(d, full) for d in sorted(studies.iterdir()) if d.is_dir()] if studies.is_dir() else []
        return [p for p in found if p]

    def drop_corrupt_records(self, say) -> None:
        """A corrupt study record is removed (saying so), so the catalog's views never fail on it; the next run of its
        study writes it again from the artifacts, which are untouched."""
        for problem in self.record_problems():
            path = Path(problem.split(": ", 1)[0])
            path.unlink(missing_ok=True)
            say(f"{problem}; removed: run study {path.parent.name} again to rewrite it")

    def clean_stale_temps(self) -> int:
        """Remove what killed writers left, never what a live one is writing -> how many were removed:
        - an artifact's temp directory (.tmp-KEY-*, .old-KEY-*) and the temp files in its resumable work directory
          (.work-KEY: checkpoints, shards, match parts being written) once the artifact's lock is free (its builder
          is gone); the work directory's finished files stay, for the next builder to resume from;
        - elsewhere (the workspace's own files, studies/, specs/): temp files whose writer, named in the file name
          (host, pid), is gone -- the catalog's ``.catalog-*.duckdb`` and every ``.NAME.*.tmp`` of the writers here
          (see `temp_path`); untagged ones of older versions once they are an hour old."""
        removed = 0
        if not self.root.is_dir():
            return removed
        for stage_dir in [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]:
            for tmp in [*stage_dir.glob(".tmp-*"), *stage_dir.glob(".old-*"), *stage_dir.glob(".work-*")]:
                found = TEMP_NAME.match(tmp.name) or WORK_NAME.match(tmp.name)
                if not found or not is_free(self.lock_path(stage_dir.name, found["key"])):
                    continue
                if tmp.name.startswith(".work-"):
                    for leftover in [p for p in tmp.rglob(".*") if p.is_file() and TEMP_FILE.match(p.name)]:
                        leftover.unlink(missing_ok=True)
                        removed += 1
                else:
                    shutil.rmtree(tmp, ignore_errors=True)
                    removed += 1
        for folder in [self.root, *(self.root / "studies").glob("*"), self.root / "specs"]:
            for path in (folder.iterdir() if folder.is_dir() else []):
                if path.is_file() and _writer_gone(path):
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed


# ---------------------------------------------------------------- temp files: named by their writer, cleaned when it is gone

WORK_NAME = re.compile(r"^\.work-(?P<key>.+)$")
TEMP_FILE = re.compile(r"^\..+\.tmp$")
# .NAME.<host>-<pid>-<random>.tmp and .catalog-<host>-<pid>-<random>.duckdb[.wal]; <host>: 6 hex digits of the host name
TAGGED = re.compile(r"^\.(?:.+\.|catalog-)(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-f]{8}(?:\.tmp|\.duckdb(?:\.wal)?)$")
LEGACY = re.compile(r"^\.(?:.+\.[0-9a-f]{8}\.tmp|catalog-[0-9a-f]{8}\.duckdb(?:\.wal)?)$")
LEGACY_AGE_S = 3600


def writer_tag() -> str:
    """<host>-<pid> of this process: a temp file's name says who writes it, so a cleaner can tell a dead writer's."""
    return f"{hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]}-{os.getpid()}"


def temp_path(path: Path) -> Path:
    """Where a writer of `path` writes before its atomic rename: beside it, hidden, named by this process."""
    return path.with_name(f".{path.name}.{writer_tag()}-{uuid.uuid4().hex[:8]}.tmp")


def _writer_gone(path: Path) -> bool:
    found = TAGGED.match(path.name)
    if found:
        if found["host"] != writer_tag().split("-")[0]:
            return False  # another machine's writer (a shared workspace): not ours to judge
        try:
            os.kill(int(found["pid"]), 0)
            return False
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
    return bool(LEGACY.match(path.name)) and time.time() - path.stat().st_mtime > LEGACY_AGE_S


# ---------------------------------------------------------------- a full disk: one line naming it and the space needed

def is_disk_full(err: BaseException) -> bool:
    """ENOSPC (or EDQUOT) from Python, or torch.save's C++ writer failing on a full disk."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("unexpected pos" in text or "file write failed" in text)


def tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def disk_full_error(path: Path, written: int = 0):
    """The disk holding `path` is full -> one InputError naming its mount point, what is free and what the write that
    failed needed (at least what it had written; that was removed)."""
    mount = Path(path).resolve()
    while not mount.exists() or (not os.path.ismount(mount) and mount != mount.parent):
        mount = mount.parent
    usage = shutil.disk_usage(mount)
    needed = f"; writing {path.name} needed more than the {_size(written)} it had written" if written else ""
    return InputError(f"{mount}: the disk is full ({_size(usage.free)} free of {_size(usage.total)}{needed}): free "
                      "some space and run again (finished work is kept)")


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if is_disk_full(err):
            raise disk_full_error(path, len(data)) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_parquet(table: pa.Table, path: Path) -> None:
    """Deterministic, atomic Parquet write (no timestamps in the file: same table -> same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        pq.write_table(table, tmp, compression="zstd", write_statistics=True)
        os.replace(tmp, path)
    except BaseException as err:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if is_disk_full(err) or "No space left" in str(err):  # pyarrow's IOError carries the OS message
            raise disk_full_error(path, written) from None
        raise
