"""Shared fixtures. Prefect runs against a real, ephemeral API server in a temporary home, per test session."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="tailstudy-prefect-home-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
from tailstudy.env import configure_offline_env  # noqa: E402  (tests call the library as the entry points do)
from tailstudy.lifeline import prefect_startup_defaults  # noqa: E402

configure_offline_env()
prefect_startup_defaults()  # a first server start under load (2 cores, other test processes) needs more than 20 s

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

TINY_SPEC = """\
name: tiny
corpus: {concepts: 10, open_concepts: 5, samples: 1200, open_samples: 150, profile: laion400m, min_count: 8, seed: 0}
evaluate: {per_class: 8}
base: {imbalance: natural, caption: full}
factors:
  imbalance: [natural, balanced]
  caption: [a_cname, full]
learners: [clip, sl]
train: {arch: tiny, epochs: 2, batch_size: 128}
seeds: [0]
"""


def terminal_sigint() -> None:
    """preexec_fn for a child that a test sends Ctrl-C: SIGINT at its default and unblocked, as a terminal starts a
    command. A child inherits an ignored or blocked SIGINT across exec, and an earlier test in this long-lived process
    can leave one so (seen once in the full suite: the child never saw the signal)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def sigint_on_import(module: str) -> str:
    """Python source that, run first in a process, sends that process SIGINT when `module` is first imported: a
    Ctrl-C landing at a known point inside start-up (or inside a library's own lazy import)."""
    return (f"import os, signal, sys\n\n\n"
            f"class SigintOnImport:\n"
            f"    def find_spec(self, name, path=None, target=None):\n"
            f"        if name == {module!r}:\n"
            f"            sys.meta_path.remove(self)\n"
            f"            os.kill(os.getpid(), signal.SIGINT)\n"
            f"        return None\n\n\n"
            f"sys.meta_path.insert(0, SigintOnImport())\n")


def sigint_state() -> str:
    """This process's SIGINT handler and blocked signals, for an assertion message."""
    return f"parent SIGINT handler {signal.getsignal(signal.SIGINT)!r}, blocked {signal.pthread_sigmask(signal.SIG_BLOCK, [])}"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train many times faster on one thread than on two contended ones; restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path


def cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed `tailstudy` console script as a user would."""
    env = {**os.environ, "PREFECT_HOME": _PREFECT_HOME, "COLUMNS": "200"}
    return subprocess.run([str(VENV_BIN / "tailstudy"), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)
