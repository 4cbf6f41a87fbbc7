"""Process hygiene for the entry points: a start-up timeout that fits a busy machine, and no orphans.

Orphans: Prefect's ephemeral API server, the match pool's workers, data-loader workers and torchrun ranks are started by
libraries we do not control, so a prctl(PR_SET_PDEATHSIG) in each child is not possible everywhere. Instead the entry
point starts one small watchdog process (``python -m tailstudy.lifeline PID:START``) that, once the entry point is gone
-- exit, crash or ``kill -9`` (it waits on a pidfd, so it wakes at once) -- terminates every process the entry point
left behind (SIGTERM, then SIGKILL after a grace period). It finds them two ways:
- by a mark each of them carries from birth: the entry point puts ``_TAILSTUDY_WATCHDOG=PID:START`` in its environment
  before anything starts children, and every child inherits it (and their children too), so a child started a moment
  before the kill is found even though it was never seen (/proc/PID/environ keeps the environment a process started
  with);
- by the process tree it last saw (refreshed every half second), for children started with an environment of their
  own; and the live descendants of everything found.
Linux only; elsewhere a no-op.
"""
from __future__ import annotations

import importlib.util
import os
import re
import select
import signal
import subprocess
import sys
import time
from importlib.metadata import packages_distributions
from pathlib import Path

STARTUP_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
# Prefect's default (20 s) is too short for a first start (it migrates its database) on a loaded machine
STARTUP_DEFAULT_S = 180
POLL_S = 0.5
GRACE_S = 3.0


def prefect_startup_defaults() -> None:
    """Set our default start-up timeout for Prefect's ephemeral server; a value the user set wins. Must run before
    Prefect is imported (Prefect reads its settings from the environment at import)."""
    os.environ.setdefault(STARTUP_SETTING, str(STARTUP_DEFAULT_S))


def shadowed_stdlib(folder=None) -> list[str]:
    """Files beside Prefect in its site-packages folder named like a standard-library module (img2dataset's
    `dataclasses` backport) -> one phrase each, saying what to uninstall; [] when there are none.

    Why only there: Prefect starts its ephemeral API server as `python -m uvicorn --app-dir <Prefect's site-packages>`,
    and uvicorn inserts --app-dir at sys.path[0] before it imports the app, so in that process site-packages precedes
    the standard library (dataclasses 0.6 has no `slots`: pydantic fails on import and the server never answers).
    Everywhere else the standard library comes first. A directory listing (`folder`: Prefect's by default): nothing
    is imported."""
    if folder is None:
        spec = importlib.util.find_spec("prefect")
        if spec is None or not spec.submodule_search_locations:
            return []
        folder = Path(list(spec.submodule_search_locations)[0]).parent
    folder = Path(folder)
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    stems = [n.removesuffix(".py") for n in names if n.endswith(".py") or (folder / n / "__init__.py").is_file()]
    stems = [s for s in stems if s in sys.stdlib_module_names]
    if not stems:
        return []
    owners = packages_distributions()
    return [f"{folder / stem}{'.py' if (folder / f'{stem}.py').exists() else ''} shadows the standard library's "
            f"`{stem}` in Prefect's API server (started with site-packages first on sys.path): run `{sys.executable} "
            f"-m pip uninstall -y {' '.join(owners.get(stem, [stem]))}`" for stem in stems]


def startup_timeout_message(exc: BaseException) -> str | None:
    """One line for Prefect's 'Timed out while attempting to connect to ephemeral Prefect API server' naming the cause
    where one is known (a shadowed standard-library module, a server that exited), else None."""
    text = str(exc)
    if "attempting to connect to ephemeral Prefect API server" not in text:
        return None
    shadowed = shadowed_stdlib()
    if shadowed:
        return f"Prefect's ephemeral API server did not start: {shadowed[0]}"
    exited = re.search(r"exited with code (-?\d+)", text)
    if exited:
        return (f"Prefect's ephemeral API server exited with code {exited.group(1)} before it answered (its error is "
                "above, on stderr); point PREFECT_API_URL at a running Prefect server to work without it")
    seconds = os.environ.get(STARTUP_SETTING, "20")
    return (f"Prefect's ephemeral API server did not start within {seconds} s (a busy machine?): raise "
            f"{STARTUP_SETTING}, or point PREFECT_API_URL at a running Prefect server")


WATCH_ENV = "_TAILSTUDY_WATCHDOG"


def start_watchdog() -> None:
    """Start the watchdog of this process (once per process; Linux only); from now on every child carries its mark."""
    me = os.getpid()
    if not sys.platform.startswith("linux") or os.environ.get(WATCH_ENV, "").split(":")[0] == str(me):
        return
    found = _stat(me)
    if found is None:
        return
    mark = f"{me}:{found[2]}"  # pid and start time: a reused pid never matches
    os.environ[WATCH_ENV] = mark
    subprocess.Popen([sys.executable, "-m", "tailstudy.lifeline", mark], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True)


def _stat(pid: int) -> tuple[int, str, int] | None:
    """-> (parent pid, state, start time) of a process from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may contain spaces and parentheses
    return int(fields[1]), fields[0], int(fields[19])


def _table() -> dict[int, tuple[int, str, int]]:
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            found = _stat(int(name))
            if found:
                table[int(name)] = found
    return table


def descendants(root: int, table: dict[int, tuple[int, str, int]] | None = None) -> dict[int, int]:
    """-> {pid: start time} of every live descendant of `root`."""
    table = table if table is not None else _table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _state, _start) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, stack = {}, list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found[pid] = table[pid][2]
        stack.extend(children.get(pid, []))
    return found


def marked(mark: str, table: dict[int, tuple[int, str, int]]) -> dict[int, int]:
    """-> {pid: start time} of every live process that started with ``WATCH_ENV=mark`` in its environment."""
    entry = f"{WATCH_ENV}={mark}".encode()
    found = {}
    for pid, (_ppid, state, start) in table.items():
        if state in ("Z", "X"):
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:  # gone, or not ours to read
            continue
        if entry in environ.split(b"\0"):
            found[pid] = start
    return found


def _alive(pid: int, start: int) -> bool:
    found = _stat(pid)
    return found is not None and found[2] == start and found[1] not in ("Z", "X")


def _signal_all(known: dict[int, int], sig: int) -> None:
    for pid, start in known.items():
        if _alive(pid, start):
            try:
                os.kill(pid, sig)
            except OSError:
                pass


def _left_behind(mark: str, seen: dict[int, int], me: int) -> dict[int, int]:
    """What the gone entry point left: the processes carrying its mark, those last seen in its tree, and the live
    descendants of all of them."""
    table = _table()
    found = {p: s for p, s in seen.items() if p in table and table[p][2] == s}
    found.update(marked(mark, table))
    for pid in list(found):
        found.update(descendants(pid, table))
    found.pop(me, None)
    return found


def _wait_for_exit(parent: int, start: int, me: int) -> dict[int, int]:
    """Block until `parent` is gone (a pidfd wakes us at once; the tree is refreshed every POLL_S meanwhile) -> the
    last tree seen."""
    seen: dict[int, int] = {}
    try:
        fd = os.pidfd_open(parent)
    except (AttributeError, OSError):  # an old kernel or Python: poll
        fd = None
    poller = None
    if fd is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
    try:
        while _alive(parent, start):
            seen = {p: s for p, s in descendants(parent).items() if p != me}
            if poller is not None:
                poller.poll(POLL_S * 1000)
            else:
                time.sleep(POLL_S)
    finally:
        if fd is not None:
            os.close(fd)
    return seen


def watch(mark: str) -> None:
    """Wait until the entry point `mark` (PID:START) is gone, then end everything it left behind (and theirs)."""
    me = os.getpid()
    if ":" not in mark:  # a bare PID (an entry point of the previous version): its start time from /proc
        found = _stat(int(mark))
        mark = f"{mark}:{found[2] if found else 0}"
    parent, start = (int(part) for part in mark.split(":"))
    if not _alive(parent, start):
        seen = {}
    else:
        seen = _wait_for_exit(parent, start, me)
    known = _left_behind(mark, seen, me)
    _signal_all(known, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        later = _left_behind(mark, known, me)  # children the orphans start while they shut down carry the mark too
        _signal_all({p: s for p, s in later.items() if p not in known}, signal.SIGTERM)
        known.update(later)
        if not any(_alive(p, s) for p, s in known.items()):
            return
        time.sleep(0.1)
    _signal_all(known, signal.SIGKILL)
    _signal_all(_left_behind(mark, known, me), signal.SIGKILL)


if __name__ == "__main__":
    watch(sys.argv[1])
