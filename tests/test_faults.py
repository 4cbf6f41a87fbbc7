"""Fault injection with real processes: `kill -9` of `tailstudy run` at random points inside each stage, then a resumed
run, must give byte-identical artifacts to an uninterrupted run; two runs at once on one workspace both succeed."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import _PREFECT_HOME, VENV_BIN

pytestmark = pytest.mark.slow

SPEC = """\
name: faults
corpus: {concepts: 10, open_concepts: 5, samples: 600, open_samples: 50, profile: laion400m, min_count: 8, seed: 0}
evaluate: {per_class: 4}
base: {imbalance: natural, caption: full}
factors:
  imbalance: [natural, balanced]
learners: [sl, clip]
train: {arch: tiny, epochs: 3, batch_size: 64}
seeds: [0]
"""
KILL_IN = ("corpus", "match", "curate", "train", "evaluate")


def start(spec: Path, ws: Path) -> subprocess.Popen:
    ws.mkdir(parents=True, exist_ok=True)  # -w names an existing workspace
    env = {**os.environ, "PREFECT_HOME": _PREFECT_HOME, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.Popen([str(VENV_BIN / "tailstudy"), "run", str(spec), "-w", str(ws)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


LOGS = {"train_log.parquet"}  # per-epoch logs: only their loss columns are deterministic (the rest are timings)


def artifact_bytes(ws: Path) -> dict[str, bytes]:
    """Every file of every finished artifact but the manifests (they record build times); timing columns dropped."""
    import pyarrow.parquet as pq

    found = {}
    for manifest in ws.glob("*/*/manifest.json"):
        for path in manifest.parent.rglob("*"):
            if path.is_file() and path.name != "manifest.json":
                data = path.read_bytes()
                if path.name in LOGS:
                    table = pq.read_table(path)
                    data = repr(table.select([c for c in table.column_names if c in ("epoch", "loss")]).to_pydict())
                    data = data.encode()
                found[path.relative_to(ws).as_posix()] = data
    return found


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    spec = root / "faults.yaml"
    spec.write_text(SPEC)
    proc = start(spec, root / "reference")
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-2000:]
    return spec, artifact_bytes(root / "reference")


def reached(ws: Path, stage: str) -> bool:
    """The run is building `stage` (a temp or work dir) or has built one of its artifacts already: a stage that takes
    milliseconds (curate) may finish between two polls, and the kill then lands in the next one."""
    stage_dir = ws / stage
    return stage_dir.is_dir() and any(p.name.startswith((".tmp-", ".work-")) or (p / "manifest.json").is_file()
                                      for p in stage_dir.iterdir())


def test_kill_9_in_every_stage_then_resume_is_byte_identical(reference, tmp_path):
    spec, expected = reference
    ws = tmp_path / "ws"
    rng = random.Random(12)
    killed_in = []
    for stage in KILL_IN:
        proc = start(spec, ws)
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline and not reached(ws, stage):
            time.sleep(0.05)
        if proc.poll() is None:
            time.sleep(rng.uniform(0, 0.4))  # a random point inside the stage
            proc.send_signal(signal.SIGKILL)
            killed_in.append(stage)
        proc.communicate(timeout=60)
    assert len(killed_in) >= 3, killed_in  # most kills really interrupted a run
    final = start(spec, ws)
    out, err = final.communicate(timeout=900)
    assert final.returncode == 0, err[-2000:]
    got = artifact_bytes(ws)
    assert sorted(got) == sorted(expected)
    differing = [name for name in expected if got[name] != expected[name]]
    assert not differing, differing
    assert not [p for p in ws.glob("*/.tmp-*")], "temp dirs of killed runs are cleaned"
    temps = [p for p in ws.rglob("*") if p.is_file() and ".prefect" not in p.parts
             and (p.name.endswith(".tmp") or p.name.startswith(".catalog-"))]
    assert not temps, f"temp files of killed writers are cleaned: {temps}"


def test_two_runs_at_once_on_one_workspace_both_succeed(reference, tmp_path):
    spec, expected = reference
    ws = tmp_path / "ws"
    first = start(spec, ws)
    time.sleep(0.5)
    second = start(spec, ws)
    outs = [proc.communicate(timeout=900) for proc in (first, second)]
    assert first.returncode == 0, outs[0][1][-2000:]
    assert second.returncode == 0, outs[1][1][-2000:]
    assert any("waiting for workspace" in err for _, err in outs)
    assert any("stages: 0 ran," in out for out, _ in outs)  # the one that waited reused everything
    got = artifact_bytes(ws)
    assert sorted(got) == sorted(expected) and all(got[name] == expected[name] for name in expected)
