"""`tailstudy export`: a curated level, with its own captions and repeats, as open_clip_train reads it."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import TINY_SPEC, VENV_BIN, cli
from tailstudy.spec import load_spec
from tailstudy.stages import cell_id, plan_study, run_local, write_study_records
from tailstudy.store import Workspace


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> tuple[Workspace, dict[str, str]]:
    """A workspace whose study has curated subsets (no training needed to export) -> (workspace, level -> key)."""
    root = tmp_path_factory.mktemp("export")
    spec_path = root / "tiny.yaml"
    spec_path.write_text(TINY_SPEC)
    ws = Workspace(root / "ws")
    graph = plan_study(load_spec(spec_path))
    curates = {cell_id(node.config["cell"]): node.upstream["curate"] for node in graph.of("evaluate")}
    run_local(ws, curates.values(), workers=1)
    write_study_records(ws, graph, {})
    return ws, {level: node.key for level, node in curates.items()}


def level_rows(ws: Workspace, keys: dict[str, str], level: str) -> list[dict]:
    rows = pq.read_table(ws.artifact("curate", keys[level]).path / "subset.parquet").to_pylist()
    return sorted(rows, key=lambda r: (r["sample_id"], r["copy"]))


def tar_samples(paths: list[Path]) -> list[dict]:
    samples: dict[str, dict] = {}
    for path in paths:
        with tarfile.open(path) as tar:
            for info in tar:
                key, _, ext = info.name.partition(".")
                samples.setdefault(key, {})[ext] = tar.extractfile(info).read()
    return [samples[k] for k in sorted(samples)]


def test_webdataset_export_has_the_levels_captions_and_repeats(curated, tmp_path):
    ws, plan = curated
    done = cli("export", "caption=a_cname", str(tmp_path / "wds"), "--format", "webdataset", "-w", str(ws.root))
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "wds" / "export.json").read_text())
    expected = level_rows(ws, plan, "caption=a_cname")
    samples = tar_samples(sorted((tmp_path / "wds").glob("*.tar")))
    assert [s["txt"].decode() for s in samples] == [r["caption"] for r in expected]
    assert samples and all(s["txt"].startswith(b"a ") for s in samples)
    assert [json.loads(s["json"])["sample_id"] for s in samples] == [r["sample_id"] for r in expected]
    assert all("png" in s or "jpg" in s for s in samples)
    assert manifest["sample_ids"] == sorted({r["sample_id"] for r in expected})
    assert manifest["samples"] == len(expected)
    assert "open_clip_train.main --dataset-type webdataset" in done.stdout
    # the full-caption level of the same samples really differs: the export is not the corpus captions
    full = {r["sample_id"]: r["caption"] for r in level_rows(ws, plan, "caption=full")}
    assert any(full[r["sample_id"]] != r["caption"] for r in expected if r["sample_id"] in full)


def test_balanced_export_keeps_repeats_and_is_deterministic(curated, tmp_path):
    ws, plan = curated
    key = plan["imbalance=balanced"]
    expected = level_rows(ws, plan, "imbalance=balanced")
    assert max(r["copy"] for r in expected) > 0, "the balanced level should repeat tail samples"
    digests = []
    for name in ("a", "b"):
        done = cli("export", key, str(tmp_path / name), "--format", "csv", "-w", str(ws.root))
        assert done.returncode == 0, done.stderr
        digests.append(json.loads((tmp_path / name / "export.json").read_text())["sha256"])
        rows = list(csv.DictReader(io.StringIO((tmp_path / name / "train.csv").read_text())))
        assert [(r["sample_id"], int(r["copy"]), r["caption"]) for r in rows] == \
               [(r["sample_id"], r["copy"], r["caption"]) for r in expected]
    assert digests[0] == digests[1]
    assert (tmp_path / "a" / "train.csv").read_bytes() == (tmp_path / "b" / "train.csv").read_bytes()


def test_export_refuses_unknown_level_and_existing_folder(curated, tmp_path):
    ws, _ = curated
    done = cli("export", "caption=nope", str(tmp_path / "x"), "-w", str(ws.root))
    assert done.returncode == 2 and "caption=nope" in done.stderr and "caption=a_cname" in done.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("x")
    done = cli("export", "caption=full", str(tmp_path / "busy"), "-w", str(ws.root))
    assert done.returncode == 2 and "not an empty folder" in done.stderr
    done = cli("export", "caption=full", str(tmp_path / "y"), "--format", "zip", "-w", str(ws.root))
    assert done.returncode == 2 and not (tmp_path / "y").exists()


def _open_clip_train(args: list[str], cwd: Path, logs: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [str(VENV_BIN / "python"), "-m", "open_clip_train.main", *args, "--model", "ViT-S-32-alt",
               "--force-image-size", "32", "--batch-size", "16", "--epochs", "1", "--workers", "1",
               "--device", "cpu", "--precision", "fp32", "--warmup", "1", "--lr", "1e-4", "--save-frequency", "0",
               "--logs", str(logs), "--name", "t", "--report-to", "none", "--seed", "0"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "webdataset"])
def test_open_clip_train_trains_on_the_export(curated, tmp_path, fmt):
    ws, _ = curated
    out = tmp_path / fmt
    done = cli("export", "caption=a_cname", str(out), "--format", fmt, "-w", str(ws.root))
    assert done.returncode == 0, done.stderr
    steps = 32  # two batches: this checks that open_clip_train reads the format, not what it learns
    if fmt == "csv":
        lines = (out / "train.csv").read_text().splitlines(keepends=True)
        (out / "train.csv").write_text("".join(lines[:steps + 1]))
        data = ["--dataset-type", "csv", "--train-data", "train.csv", "--csv-img-key", "filepath",
                "--csv-caption-key", "caption", "--csv-separator", ","]
    else:
        data = ["--dataset-type", "webdataset", "--train-data", str(out / "00000.tar"),
                "--train-num-samples", str(steps)]
    trained = _open_clip_train(data, out, tmp_path / "logs")
    log = trained.stdout + trained.stderr
    assert trained.returncode == 0, log[-3000:]
    assert "Train Epoch: 0" in log, log[-3000:]
