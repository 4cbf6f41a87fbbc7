"""The study flow end to end on a tiny synthetic world, through a real (ephemeral) Prefect API."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tailstudy.flows.runner import run_study
from tests.conftest import TINY_SPEC

pytestmark = pytest.mark.slow


def same(a: list[dict], b: list[dict]) -> bool:
    """Equal metrics, NaN included (NaN is a legitimate value: rho is undefined on a balanced subset)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def ran(summary: dict) -> list[tuple[str, str]]:
    return sorted((r["stage"], r["label"]) for r in summary["stages"] if r["status"] == "ran")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, one_torch_thread):
    """One thread, as each of the parallel test's two concurrent runs gets on this 2-core machine: torch's CPU
    reductions sum in per-thread chunks, so weights are bit-identical only at the same thread count."""
    root = tmp_path_factory.mktemp("flow")
    spec = root / "tiny.yaml"
    spec.write_text(TINY_SPEC)
    ws = root / "ws"
    return spec, ws, run_study(str(spec), str(ws))


def test_first_run_builds_every_stage_once(first_run):
    _, ws, summary = first_run
    counts = Counter(r["stage"] for r in summary["stages"] if r["status"] == "ran")
    assert counts["vocab"] == counts["corpus"] == counts["match"] == counts["frequency"] == counts["report"] == 1
    # natural, balanced, a_cname; "caption=full" is the base cell again, so it is shared, not rebuilt
    assert counts["curate"] == 3
    # SL ignores captions: caption=a_cname/sl trains on the same labels as the base cell and shares its run
    assert ("train", "caption=a_cname/sl/s0") not in ran(summary)
    assert ("train", "caption=a_cname/clip/s0") in ran(summary)
    assert len(summary["results"]) == 8  # 4 cells x 2 learners
    assert Path(summary["report"]).is_file()
    assert (Path(summary["report"]).parent / "figures" / "acc_vs_freq.png").stat().st_size > 1000


def test_second_run_reuses_everything(first_run):
    spec, ws, first = first_run
    again = run_study(str(spec), str(ws))
    assert ran(again) == []
    assert {r["status"] for r in again["stages"]} <= {"reused", "shared"}
    assert same(again["results"], first["results"])


def test_changing_one_level_reruns_only_what_depends_on_it(first_run, tmp_path):
    spec, ws, _ = first_run
    changed = tmp_path / "changed.yaml"
    changed.write_text(spec.read_text().replace("caption: [a_cname, full]", "caption: [cname, full]"))
    summary = run_study(str(changed), str(ws))
    assert ran(summary) == [("curate", "caption=cname"), ("evaluate", "caption=cname/clip/s0"),
                            ("report", "tiny"), ("train", "caption=cname/clip/s0")]


def test_missing_artifact_is_rebuilt_and_force_reruns(first_run):
    spec, ws, _ = first_run
    summary = run_study(str(spec), str(ws))
    victim = next(r for r in summary["stages"] if r["stage"] == "evaluate")
    shutil.rmtree(ws / "evaluate" / victim["key"])
    again = run_study(str(spec), str(ws))
    assert ran(again) == [("evaluate", victim["label"])]
    forced = run_study(str(spec), str(ws), force=["frequency"])
    assert ran(forced) == [("frequency", "imagenet1k")]


def test_same_spec_and_seed_give_identical_subsets_and_metrics(first_run, tmp_path):
    spec, ws, first = first_run
    other = run_study(str(spec), str(tmp_path / "ws2"))
    subsets = sorted((ws / "curate").glob("*/subset.parquet"))
    assert subsets
    for path in subsets:
        twin = tmp_path / "ws2" / "curate" / path.parent.name / "subset.parquet"
        if twin.exists():  # the first workspace also holds the changed-level subset
            assert path.read_bytes() == twin.read_bytes()
    assert same(other["results"], first["results"])
    assert pq.read_table(ws / "corpus" / next((ws / "corpus").iterdir()).name / "captions.parquet").num_rows > 1000


def test_parallel_training_overlaps_and_equals_a_sequential_run(first_run, tmp_path):
    """train.parallel: 2 runs two training runs at once (each in its own process, on its share of the threads);
    their manifests' start/end times overlap and their models and metrics equal the sequential run's."""
    import torch

    spec, ws, _ = first_run
    parallel = tmp_path / "parallel.yaml"
    parallel.write_text(spec.read_text().replace("batch_size: 128}", "batch_size: 128, parallel: 2}"))
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy, ignore=shutil.ignore_patterns("train", "evaluate", "report", ".prefect"))
    summary = run_study(str(parallel), str(copy))
    trained = sorted({r["key"] for r in summary["stages"] if r["stage"] == "train" and r["status"] == "ran"})
    assert len(trained) == 5  # natural and balanced x clip and sl, and a_cname/clip
    spans = [(m["started_at"], m["finished_at"]) for m in
             (json.loads((copy / "train" / k / "manifest.json").read_text()) for k in trained)]
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:]), spans
    for key in trained:
        ours = torch.load(copy / "train" / key / "model.pt", weights_only=False)["model"]
        theirs = torch.load(ws / "train" / key / "model.pt", weights_only=False)["model"]
        assert all(torch.equal(ours[name], theirs[name]) for name in theirs), key
    again = {r["key"]: pq.read_table(copy / "evaluate" / r["key"] / "metrics.parquet").to_pylist()
             for r in summary["stages"] if r["stage"] == "evaluate"}
    assert same([again[k] for k in sorted(again)],
                [pq.read_table(ws / "evaluate" / k / "metrics.parquet").to_pylist() for k in sorted(again)])
