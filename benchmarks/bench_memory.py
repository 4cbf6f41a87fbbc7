"""Peak memory of `tailstudy run` (the whole process tree) at two corpus sizes: training streams, so it must not grow
with the subset.

    .venv/bin/python benchmarks/bench_memory.py                       # 4000 and 16000 samples, 224 px, RN50, sl
    .venv/bin/python benchmarks/bench_memory.py --samples 400 1600 --image-size 64 --arch tiny   # a quick look

For each size: writes a study spec (synthetic world at --image-size, no open-world concepts, learners [sl], --arch,
train.max_steps, one seed, no factors, small eval split), runs `tailstudy run SPEC -w WORKSPACE` in a fresh temporary
workspace, and polls every process of its tree (psutil, every --interval s) for the sum of RSS and the sum of PSS
(proportional set size: pages shared between a parent and its forked data workers counted once). The corpus stage
(rendering the world) runs in the same process and is part of the peak. Prints both peaks per size and the ratios
large/small; the target is a ratio below 1.15 and a peak below 4 GiB.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def spec_text(name: str, samples: int, args) -> str:
    return json.dumps({
        "name": name,
        "corpus": {"source": "synthetic", "concepts": args.concepts, "open_concepts": 0, "samples": samples,
                   "open_samples": 0, "profile": "laion400m", "image_size": args.image_size, "seed": 0},
        "eval": {"per_class": args.eval_per_class},
        "models": ["sl"],
        "train": {"arch": args.arch, "epochs": 1, "batch_size": args.batch_size, "max_steps": args.max_steps,
                  "device": "cpu"},
        "seeds": [0],
    })  # JSON is YAML


def tree_memory(proc) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes over a process and its descendants; vanished processes are skipped."""
    import psutil

    rss = pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return rss, pss


def measure(samples: int, args) -> dict:
    import psutil

    work = Path(tempfile.mkdtemp(prefix=f"bench-memory-{samples}-"))
    try:
        spec = work / "spec.yaml"
        spec.write_text(spec_text(f"memory{samples}", samples, args))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        started = time.perf_counter()
        proc = subprocess.Popen([str(VENV_BIN / "tailstudy"), "run", str(spec), "-w", str(work / "ws")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        root = psutil.Process(proc.pid)
        peak_rss = peak_pss = 0
        while proc.poll() is None:
            rss, pss = tree_memory(root)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(args.interval)
        out = proc.stdout.read()
        if proc.returncode != 0:
            raise SystemExit(f"tailstudy run failed for {samples} samples:\n{out[-3000:]}")
        return {"samples": samples, "peak_rss_gib": peak_rss / 2 ** 30, "peak_pss_gib": peak_pss / 2 ** 30,
                "seconds": time.perf_counter() - started}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, nargs=2, default=[4000, 16000])
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--arch", default="RN50")
    p.add_argument("--concepts", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-steps", type=int, default=2)
    p.add_argument("--eval-per-class", type=int, default=2)
    p.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    results = []
    for n in args.samples:
        results.append(measure(n, args))
        r = results[-1]
        print(f"{n:>7} samples: peak RSS (sum over the tree) {r['peak_rss_gib']:.2f} GiB, peak PSS "
              f"{r['peak_pss_gib']:.2f} GiB, {r['seconds']:.0f} s", flush=True)
    small, large = results
    ratios = {k: large[k] / small[k] for k in ("peak_rss_gib", "peak_pss_gib")}
    print(f"ratio {large['samples']}/{small['samples']}: RSS {ratios['peak_rss_gib']:.3f}, PSS "
          f"{ratios['peak_pss_gib']:.3f} (target < 1.15, and < 4 GiB)")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "ratios": ratios, "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
