#!/usr/bin/env bash
# One GPU, under 10 minutes, one JSON line on stdout (progress on stderr):
#   RN50 and ViT-B-32 samples/s of our loop and of open_clip_train.main on the same synthetic 224 px shards (same model,
#   batch, data workers; benchmarks/bench_train.py), our data-wait fraction, peak GPU memory of both, and a 2-learner
#   mini study (clip + sl, RN50) run end to end with `tailstudy run`, with its wall time and top-1 per learner.
#
#   benchmarks/gpu_check.sh                 # on a GPU machine, from the repository root
#   benchmarks/gpu_check.sh --cpu-smoke     # the same path on CPU at tiny sizes (tiny config, 32 px): checks the script
#
# Sizes (GPU): 2048 images at 224 px in 8 shards, batch 256, 3 epochs (1 warm-up), 8 data workers; the study: 20
# classes, 2000 samples at 224 px, 3 epochs, batch 256.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
MODE="gpu"
[[ "${1:-}" == "--cpu-smoke" ]] && MODE="cpu-smoke"
WORK="$(mktemp -d -t gpu-check-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-180}"

MODE="$MODE" WORK="$WORK" "$PY" - <<'EOF'
import contextlib, json, os, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, "benchmarks")
import bench_train  # noqa: E402

mode, work = os.environ["MODE"], Path(os.environ["WORK"])
smoke = mode == "cpu-smoke"
say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
if smoke:
    archs, device = {"RN50": "tiny", "ViT-B-32": "tiny"}, "cpu"
    common = ["--samples", "64", "--concepts", "4", "--batch-size", "16", "--epochs", "2", "--workers", "1",
              "--shards", "2", "--threads", "1", "--repeats", "1"]
    study = {"corpus": {"concepts": 4, "open_concepts": 0, "samples": 120, "open_samples": 0, "image_size": 32},
             "train": {"arch": "tiny", "epochs": 1, "batch_size": 32, "device": "cpu"}}
else:
    archs, device = {"RN50": "RN50", "ViT-B-32": "ViT-B-32"}, "cuda"
    common = ["--samples", "2048", "--concepts", "20", "--batch-size", "256", "--epochs", "3", "--workers", "8",
              "--shards", "8", "--repeats", "1"]  # one run each side: the 10-minute budget
    study = {"corpus": {"concepts": 20, "open_concepts": 0, "samples": 2000, "open_samples": 0, "image_size": 224},
             "train": {"arch": "RN50", "epochs": 3, "batch_size": 256, "device": "cuda", "workers": 8}}

result = {"mode": mode}
corpus = work / "corpus"  # 224 px (or 32 px) shards shared by both architectures and both loops
for name, arch in archs.items():
    say(f"[gpu_check] bench_train {name} ({arch}) ...")
    out = work / f"{name}.json"
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the one JSON line only
        bench_train.main(["--arch", arch, "--device", device, "--corpus", str(corpus), "--learners", "clip",
                          "--json", str(out), *common])
    bench = json.loads(out.read_text())
    ours, theirs = bench["ours"]["clip"][-1], bench["open_clip_train"][-1]  # per repetition (here one)
    rows = {r["measure"]: r for r in bench["rows"]}  # medians over the repetitions
    result[name] = {
        "ours_samples_per_s": round(rows["end-to-end"]["ours"], 1),
        "open_clip_train_samples_per_s": round(rows["end-to-end"]["theirs"], 1),
        "ratio": round(rows["end-to-end"]["ratio"], 3),
        "ours_step_samples_per_s": round(rows["step"]["ours"], 1),
        "open_clip_train_step_samples_per_s": round(rows["step"]["theirs"], 1),
        "ours_data_wait_frac": ours["data_wait_frac"][-1],
        "open_clip_train_data_wait_frac": theirs["data_wait_frac"][-1],
        "ours_peak_gpu_mb": ours["peak_gpu_mb"], "open_clip_train_peak_gpu_mb": theirs["peak_gpu_mb"],
        "image_size": bench["image_size"], "batch_size": bench["batch_size"], "device": bench["device"],
    }

say("[gpu_check] mini study (clip + sl) ...")
spec = {"name": "gpu_check", "corpus": {"source": "synthetic", "profile": "laion400m", "seed": 0, **study["corpus"]},
        "evaluate": {"per_class": 5}, "learners": ["clip", "sl"], "train": study["train"], "seeds": [0]}
(work / "study.yaml").write_text(json.dumps(spec))
started = time.perf_counter()
run = subprocess.run([str(Path(sys.executable).parent / "tailstudy"), "run", str(work / "study.yaml"), "-w",
                      str(work / "ws")], capture_output=True, text=True)
seconds = time.perf_counter() - started
if run.returncode != 0:
    say(run.stdout[-3000:] + run.stderr[-3000:])
    sys.exit(f"[gpu_check] tailstudy run failed ({run.returncode})")
metrics = subprocess.run([str(Path(sys.executable).parent / "tailstudy"), "sql", "-w", str(work / "ws"), "--format",
                          "json", "select learner, top1, rho_pred from run_metrics order by learner"],
                         capture_output=True, text=True, check=True).stdout
log = subprocess.run([str(Path(sys.executable).parent / "tailstudy"), "sql", "-w", str(work / "ws"), "--format",
                      "json", "select max(samples_per_s_per_device) as samples_per_s_per_device, "
                      "avg(data_wait_frac) as data_wait_frac, max(peak_gpu_mb) as peak_gpu_mb from train_log"],
                     capture_output=True, text=True, check=True).stdout
result["mini_study"] = {"seconds": round(seconds, 1), "runs": json.loads(metrics), "train_log": json.loads(log)}
def finite(value):  # NaN (no GPU memory on CPU) -> null: the line stays strict JSON
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return None if isinstance(value, float) and value != value else value


print(json.dumps(finite(result), default=str, allow_nan=False))
EOF
