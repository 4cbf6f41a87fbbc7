"""benchmarks/bench_train.py runs end to end at the smallest sizes and prints, per learner and measure, both
throughputs (positive, the measured ones) and their ratio (the median of the repetitions' ratios)."""
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_bench_train_prints_both_throughputs_and_their_ratio(tmp_path: Path):
    out_json = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_train.py"), "--samples", "32", "--concepts", "2",
           "--batch-size", "16", "--epochs", "2", "--threads", "1", "--device", "cpu", "--workers", "1", "--repeats", "2",
           "--corpus", str(tmp_path / "corpus"), "--json", str(out_json)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out_json.read_text())

    lines = run.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| learner"))
    assert "samples/s (ours)" in header and "samples/s (open_clip_train)" in header and "ratio ours/theirs" in header
    printed = {}
    for line in lines:
        if line.startswith(("| clip", "| sl")):
            learner, device, measure, ours, theirs, ratio, per_rep = (c.strip() for c in line.strip("|").split("|"))
            assert device.startswith("cpu")
            printed[learner, measure] = (float(ours), float(theirs.removesuffix(" (clip)")), float(ratio),
                                         [float(x) for x in per_rep.split()])
    assert set(printed) == {(k, m) for k in ("clip", "sl") for m in ("step", "end-to-end")}, run.stdout

    for (learner, measure), (ours, theirs, ratio, per_rep) in printed.items():
        key = "step_samples_per_s" if measure == "step" else "end_to_end_samples_per_s"
        measured = [(o[key], t[key]) for o, t in zip(result["ours"][learner], result["open_clip_train"])]
        assert len(measured) == 2 and all(o > 0 and t > 0 for o, t in measured)
        assert ours == pytest.approx(statistics.median(o for o, _ in measured), rel=0.01)
        assert theirs == pytest.approx(statistics.median(t for _, t in measured), rel=0.01)
        assert per_rep == pytest.approx([o / t for o, t in measured], abs=0.006)
        assert ratio > 0 and ratio == pytest.approx(statistics.median(o / t for o, t in measured), abs=0.006)

    assert all(r["images_per_epoch"] >= 32 for r in result["open_clip_train"])  # it rounds up to whole batches
    assert all(r["samples_per_epoch"] == 32 for r in result["ours"]["clip"]) and result["workers"] == 1
    assert all(0 <= f <= 1 for r in result["ours"]["clip"] for f in r["data_wait_frac"])
    assert not list(tmp_path.glob("**/*.pt")), "no checkpoint may outlive the run"
    assert (tmp_path / "corpus" / "world.json").is_file()  # --corpus keeps the generated corpus for reuse
