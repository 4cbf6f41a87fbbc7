"""benchmarks/bench_train.py runs end to end at the smallest sizes and prints both throughputs and their ratio."""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_train_prints_both_throughputs_and_a_ratio(tmp_path: Path):
    out_json = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_train.py"), "--samples", "32", "--concepts", "2",
           "--batch-size", "16", "--epochs", "2", "--threads", "1", "--device", "cpu", "--workers", "2", "--repeats", "2",
           "--corpus", str(tmp_path / "corpus"), "--json", str(out_json)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    header = next(line for line in run.stdout.splitlines() if line.startswith("| learner"))
    assert "samples/s (ours)" in header and "samples/s (open_clip_train)" in header and "ratio ours/theirs" in header
    number = r"\s*([0-9.]+)(?: \(clip\))?\s*"
    rows = [re.fullmatch(r"\| (\w+)\s*\| cpu[^|]*\| (step|end-to-end)\s*\|" + number + r"\|" + number + r"\|" + number
                         + r"\|\s*([0-9.]+) ([0-9.]+)\s*\|", line)
            for line in run.stdout.splitlines() if line.startswith(("| clip", "| sl"))]
    assert len(rows) == 4 and all(rows), run.stdout
    assert {(m[1], m[2]) for m in rows} == {(k, m) for k in ("clip", "sl") for m in ("step", "end-to-end")}

    result = json.loads(out_json.read_text())
    assert result["repeats"] == 2 and len(result["open_clip_train"]) == 2 and len(result["ours"]["sl"]) == 2
    for row in result["rows"]:  # the ratio is the median (here: mean of two) of the interleaved repetitions' ratios
        key = "step_samples_per_s" if row["measure"] == "step" else "end_to_end_samples_per_s"
        per_rep = [o[key] / t[key] for o, t in zip(result["ours"][row["learner"]], result["open_clip_train"])]
        assert row["ours"] > 0 and row["theirs"] > 0 and math.isclose(row["ratio"], sum(per_rep) / 2)
    assert all(r["images_per_epoch"] >= 32 for r in result["open_clip_train"])  # it rounds up to whole batches
    assert all(r["samples_per_epoch"] == 32 for r in result["ours"]["clip"]) and result["workers"] == 2
    assert all(0 <= f <= 1 for r in result["ours"]["clip"] for f in r["data_wait_frac"])
    assert not list(tmp_path.glob("**/*.pt")), "no checkpoint may outlive the run"
    assert (tmp_path / "corpus" / "world.json").is_file()  # --corpus keeps the generated corpus for reuse
