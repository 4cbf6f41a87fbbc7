"""Advisory file locks for a workspace and for each artifact being built.

A lock is ``flock`` on a small file: the kernel releases it when its holder dies (even by ``kill -9``), so a lock left
by a killed process is never stale -- the next taker gets it at once. The file records the holder (PID, host, command,
time) only for messages; a record found on a free lock names the process whose lock was taken over.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from tailstudy.errors import InputError

POLL_S = 0.5


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:200]}


def describe(record: str) -> str:
    try:
        info = json.loads(record)
        return f"PID {info['pid']} on {info['host']} ({info['command']}, since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


def _read(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode("utf-8", errors="replace")


def _open(path: Path, what: str) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise InputError(f"{path.parent}: cannot lock {what}: {err.strerror} (is the workspace writable?)") from None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _same_file(fd: int, path: Path) -> bool:
    """The locked descriptor is still the file at `path` (a releasing holder unlinks it; a waiter that then got the
    lock on the unlinked inode must start over on the new file)."""
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _acquire(path: Path, what: str, timeout: float | None, say: Callable[[str], None] | None) -> int:
    """-> a descriptor of `path` holding its flock, waiting as `file_lock` says."""
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False
    while True:
        fd = _open(path, what)
        holder = describe(_read(fd))
        while not _try_lock(fd):
            if timeout == 0 or (deadline is not None and time.monotonic() > deadline):
                os.close(fd)
                busy = "busy" if timeout == 0 else f"still busy after {timeout:g} s"
                raise InputError(f"{what} is {busy}: locked by {holder}")
            if say and not told:
                told = True
                say(f"waiting for {what}: locked by {holder}"
                    + (f" (at most {timeout:g} s)" if timeout is not None else ""))
            time.sleep(POLL_S)
        if _same_file(fd, path):
            return fd
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: Path, what: str, timeout: float | None = None,
              say: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block. A busy lock is waited for (saying so once), at most `timeout`
    seconds (None = as long as it takes, 0 = not at all); then one InputError names the holder. A clean release
    removes the file; a file left with a record names a holder that died, whose lock is taken over."""
    if timeout is not None and not (math.isfinite(timeout) and timeout >= 0):  # nan would wait forever
        raise InputError(f"lock timeout {timeout}: give seconds, 0 or more (or none: wait as long as it takes)")
    fd = _acquire(path, what, timeout, say)
    try:
        if _read(fd).strip() and say:  # a record on a free lock: its holder died without releasing it
            say(f"taking over the lock of {what} from {describe(_read(fd))}, which is gone")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # released (also on an error), while still held: nothing is left behind
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def is_free(path: Path) -> bool:
    """True when nobody holds the lock at `path` (probed without waiting; a missing lock file is free)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return True
    try:
        if _try_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return True
        return False
    finally:
        os.close(fd)


def stderr_say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
