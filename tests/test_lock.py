"""deploy/requirements.lock is a closed set that installs as it stands: every entry an exact pin with hashes, every
requirement of every locked package met by another locked package (one deliberate exception), pyproject's ranges
admitting every locked version, and set-up and the Docker image installing it the same way (--require-hashes
--no-deps: nothing resolved, so no upstream release can get in). Reads the installed packages' metadata: no network."""
from __future__ import annotations

import re
import tomllib
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import REPO

LOCK = REPO / "deploy" / "requirements.lock"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)"
                 r"(?P<hashes>(?:\s+--hash=sha256:[0-9a-f]{64})+)$")
# left out on purpose: img2dataset asks for the Python 3.6 `dataclasses` backport, which shadows the standard library
# inside Prefect's API server (pyproject.toml, pipeline/lifeline.py); with --no-deps nothing installs it
DELIBERATELY_UNMET = {("img2dataset", "dataclasses")}
INSTALL_FLAGS = ("--require-hashes", "--no-deps")


def entries() -> list[str]:
    """The lock's logical lines (backslash continuations joined), comments and blank lines left out."""
    joined = re.sub(r"\\\n", " ", LOCK.read_text())
    return [" ".join(line.split()) for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def pins() -> dict[str, Version]:
    found = {}
    for line in entries():
        match = PIN.match(line)
        found[canonicalize_name(match["name"])] = Version(match["version"])
    return found


def test_every_entry_is_an_exact_pin_with_hashes():
    bad = [line[:80] for line in entries() if not PIN.match(line)]
    assert not bad, f"not `name==version --hash=sha256:...`: {bad}"
    names = [canonicalize_name(PIN.match(line)["name"]) for line in entries()]
    assert len(names) == len(set(names)), "a package is pinned twice"
    assert "dataclasses" not in names


def _requirements(dist: metadata.Distribution, extras: set[str]) -> list[Requirement]:
    """What `dist` needs on this interpreter with these extras (markers evaluated as pip does)."""
    wanted = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({**default_environment(), "extra": extra})
                                     for extra in (extras or {""}) | {""}):
            wanted.append(req)
    return wanted


def test_the_lock_is_closed():
    """Walk every locked package's requirements (with the extras asked of it) through the installed metadata: each
    one names a locked package at a version it admits. The installed set is the lock (setup.sh installs it)."""
    locked = pins()
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}
    stale = {name: str(v) for name, v in locked.items()
             if name not in installed or Version(installed[name].version) != v}
    assert not stale, f"the venv does not hold the lock (run bash deploy/setup.sh): {stale}"
    extras: dict[str, set[str]] = {name: set() for name in locked}
    unmet, excused, queue = [], set(), list(locked)
    while queue:  # a requirement with extras (httpx[http2]) adds that package's extra requirements: walk it again
        name = queue.pop()
        for req in _requirements(installed[name], extras[name]):
            target = canonicalize_name(req.name)
            if target not in locked:
                if (name, target) in DELIBERATELY_UNMET:
                    excused.add((name, target))
                else:
                    unmet.append(f"{name} needs {req} (not locked)")
                continue
            if not req.specifier.contains(locked[target], prereleases=True):
                unmet.append(f"{name} needs {req}, the lock has {locked[target]}")
            if set(req.extras) - extras[target]:
                extras[target] |= set(req.extras)
                queue.append(target)
    assert not unmet, unmet
    assert excused == DELIBERATELY_UNMET, "an exception no longer needed: drop it from DELIBERATELY_UNMET"


def test_pyproject_ranges_admit_the_locked_versions():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [r for group in project["optional-dependencies"].values() for r in group]
    locked = pins()
    wrong = []
    for text in declared:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name not in locked:
            wrong.append(f"{text}: not in the lock")
        elif not req.specifier.contains(locked[name], prereleases=True):
            wrong.append(f"{text}: the lock has {locked[name]}")
    assert not wrong, wrong


def _lock_installs(script: str) -> list[list[str]]:
    """Every `pip install ... -r deploy/requirements.lock` in a shell text, as argument lists."""
    found = []
    for command in re.split(r"&&|\n", re.sub(r"\\\n", " ", script)):
        words = command.split("#")[0].split()
        if "install" in words and "deploy/requirements.lock" in words:
            found.append(words)
    return found


def test_setup_and_docker_install_the_lock_the_same_way():
    import dockerfile

    setup = _lock_installs((REPO / "deploy" / "setup.sh").read_text())
    runs = "\n".join(c.value[0] for c in dockerfile.parse_file(str(REPO / "deploy" / "Dockerfile")) if c.cmd == "RUN")
    docker = _lock_installs(runs)
    assert setup and docker, (setup, docker)
    for words in setup + docker:
        assert all(flag in words for flag in INSTALL_FLAGS), words
    # the image's other pip install (the worker extras) may resolve, but never moves a locked package
    extras = [c for c in re.split(r"&&|\n", runs) if "WORKER_EXTRAS}" in c and "pip install" in c]
    assert extras and all(" -c " in c for c in extras), extras
