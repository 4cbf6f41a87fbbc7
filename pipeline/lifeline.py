"""Process hygiene for the entry points: a start-up timeout that fits a busy machine, and no orphans.

Orphans: Prefect's ephemeral API server, the match pool's workers, data-loader workers and torchrun ranks are started by
libraries we do not control, so a prctl(PR_SET_PDEATHSIG) in each child is not possible everywhere. Instead the entry
point starts one small watchdog process (``python -m tailstudy.lifeline PID``) that remembers the entry point's
descendants (read from /proc every half second) and, once the entry point is gone -- exit, crash or ``kill -9`` --
terminates those that are still running (SIGTERM, then SIGKILL after a grace period). Linux only; elsewhere a no-op.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

STARTUP_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
# Prefect's default (20 s) is too short for a first start (it migrates its database) on a loaded machine
STARTUP_DEFAULT_S = 180
POLL_S = 0.5
GRACE_S = 3.0


def prefect_startup_defaults() -> None:
    """Set our default start-up timeout for Prefect's ephemeral server; a value the user set wins. Must run before
    Prefect is imported (Prefect reads its settings from the environment at import)."""
    os.environ.setdefault(STARTUP_SETTING, str(STARTUP_DEFAULT_S))


def startup_timeout_message(exc: BaseException) -> str | None:
    """One line for Prefect's 'Timed out while attempting to connect to ephemeral Prefect API server', else None."""
    if "attempting to connect to ephemeral Prefect API server" not in str(exc):
        return None
    seconds = os.environ.get(STARTUP_SETTING, "20")
    return (f"Prefect's ephemeral API server did not start within {seconds} s (a busy machine?): raise "
            f"{STARTUP_SETTING}, or point PREFECT_API_URL at a running Prefect server")


def start_watchdog() -> None:
    """Start the watchdog of this process (once per process; Linux only)."""
    if not sys.platform.startswith("linux") or os.environ.get("_TAILSTUDY_WATCHDOG") == str(os.getpid()):
        return
    os.environ["_TAILSTUDY_WATCHDOG"] = str(os.getpid())
    subprocess.Popen([sys.executable, "-m", "tailstudy.lifeline", str(os.getpid())], stdin=subprocess.DEVNULL,
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


def watch(parent: int) -> None:
    """Poll until `parent` is gone, then end the descendants it left behind (and theirs)."""
    me = os.getpid()
    first = _stat(parent)
    if first is None:
        return
    known: dict[int, int] = {}
    while _alive(parent, first[2]):
        known = {p: s for p, s in descendants(parent).items() if p != me}
        time.sleep(POLL_S)
    table = _table()
    for pid in list(known):  # children the orphans started since the last poll are still theirs
        if pid in table and table[pid][2] == known[pid]:
            known.update({p: s for p, s in descendants(pid, table).items() if p != me})
    _signal_all(known, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(_alive(p, s) for p, s in known.items()):
        time.sleep(0.1)
    _signal_all(known, signal.SIGKILL)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
