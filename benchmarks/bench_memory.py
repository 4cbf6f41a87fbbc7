"""Peak memory of `tailstudy run` (the whole process tree) at two corpus sizes: training streams, so it must not grow
with the subset.

    .venv/bin/python benchmarks/bench_memory.py                       # 4000 and 16000 samples, 224 px, RN50, sl
    .venv/bin/python benchmarks/bench_memory.py --samples 400 1600 --image-size 64 --arch tiny   # a quick look

For each size: writes a study spec (synthetic world at --image-size, no open-world concepts, learners [sl], --arch,
train.max_steps, one seed, no factors, small eval split), runs `tailstudy run SPEC -w WORKSPACE` in a fresh temporary
workspace, and polls every process of its tree (psutil, every --interval s) for the sum of RSS and the sum of PSS
(proportional set size: a page shared by k processes, e.g. torch's libraries, counts 1/k in each, so once in the sum).
The corpus stage (rendering the world) runs in the same process and is part of the peak. Prints both peaks per size,
then one line per kind of process (the CLI, which trains and evaluates in-process; the Prefect server; data workers;
...): how many there were, the largest single-process peak RSS and PSS, and their share at the moment of the tree's
RSS peak; then the ratios large/small. The target is a ratio below 1.15 and a peak below 4 GiB.
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
        "evaluate": {"per_class": args.eval_per_class},
        "learners": ["sl"],
        "train": {"arch": args.arch, "epochs": 1, "batch_size": args.batch_size, "max_steps": args.max_steps,
                  "device": "cpu"},
        "seeds": [0],
    })  # JSON is YAML


def role(p, roles: dict) -> str:
    """What a process of the tree is: the CLI itself, the Prefect server, a training child, a data worker (spawned by
    a DataLoader), or something else (by name)."""
    cmd = " ".join(p.cmdline())
    parent = roles.get(p.ppid())
    if "resource_tracker" in cmd:
        return "resource-tracker"
    if "spawn_main" in cmd:
        return f"worker (of {parent})"
    if "prefect" in cmd and ("server" in cmd or "uvicorn" in cmd):
        return "prefect-server"
    if "tailstudy.flows.torchrun" in cmd:
        return "train-child"
    return f"{p.name()} (of {parent})"


def tree_memory(proc, roles: dict) -> dict[int, tuple[str, int, int]]:
    """pid -> (role, RSS, PSS) in bytes for a process and its descendants; vanished processes are skipped.
    PSS (proportional set size) counts a page shared by k processes as 1/k in each, so its sum counts it once."""
    import psutil

    out = {}
    for p in [proc, *proc.children(recursive=True)]:
        try:
            if p.pid not in roles:
                roles[p.pid] = "cli" if p.pid == proc.pid else role(p, roles)
            info = p.memory_full_info()
            out[p.pid] = (roles[p.pid], info.rss, getattr(info, "pss", info.rss))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


class Peaks:
    """Peak sums over the tree (with each role's share at the RSS-sum peak) and each process's own peak."""

    def __init__(self):
        self.rss = self.pss = 0
        self.at_peak: dict[str, list[int]] = {}
        self.per_pid: dict[int, list] = {}

    def add(self, snapshot: dict[int, tuple[str, int, int]]) -> None:
        rss, pss = sum(v[1] for v in snapshot.values()), sum(v[2] for v in snapshot.values())
        if rss > self.rss:
            self.rss, self.at_peak = rss, {}
            for r, a, b in snapshot.values():
                share = self.at_peak.setdefault(r, [0, 0, 0])
                share[0], share[1], share[2] = share[0] + 1, share[1] + a, share[2] + b
        self.pss = max(self.pss, pss)
        for pid, (r, a, b) in snapshot.items():
            peak = self.per_pid.setdefault(pid, [r, 0, 0])
            peak[1], peak[2] = max(peak[1], a), max(peak[2], b)

    def per_role(self) -> dict[str, dict]:
        """role -> processes seen, the largest single-process peak RSS and PSS."""
        out: dict[str, dict] = {}
        for r, a, b in self.per_pid.values():
            row = out.setdefault(r, {"processes": 0, "peak_rss_mib": 0.0, "peak_pss_mib": 0.0})
            row["processes"] += 1
            row["peak_rss_mib"] = max(row["peak_rss_mib"], a / 2 ** 20)
            row["peak_pss_mib"] = max(row["peak_pss_mib"], b / 2 ** 20)
        return out


def measure(samples: int, args) -> dict:
    import psutil

    work = Path(tempfile.mkdtemp(prefix=f"bench-memory-{samples}-"))
    try:
        spec = work / "spec.yaml"
        spec.write_text(spec_text(f"memory{samples}", samples, args))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PREFECT_HOME": str(work / "prefect")}
        (work / "ws").mkdir()  # -w names an existing workspace
        started = time.perf_counter()
        proc = subprocess.Popen([str(VENV_BIN / "tailstudy"), "run", str(spec), "-w", str(work / "ws")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        root, roles, peaks = psutil.Process(proc.pid), {}, Peaks()
        while proc.poll() is None:
            peaks.add(tree_memory(root, roles))
            time.sleep(args.interval)
        out = proc.stdout.read()
        if proc.returncode != 0:
            raise SystemExit(f"tailstudy run failed for {samples} samples:\n{out[-3000:]}")
        at_peak = {r: {"processes": n, "rss_mib": a / 2 ** 20, "pss_mib": b / 2 ** 20}
                   for r, (n, a, b) in peaks.at_peak.items()}
        return {"samples": samples, "peak_rss_gib": peaks.rss / 2 ** 30, "peak_pss_gib": peaks.pss / 2 ** 30,
                "seconds": time.perf_counter() - started, "per_role": peaks.per_role(), "at_rss_peak": at_peak}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_result(r: dict) -> None:
    print(f"{r['samples']:>7} samples: peak RSS (sum over the tree) {r['peak_rss_gib']:.2f} GiB, peak PSS (sum) "
          f"{r['peak_pss_gib']:.2f} GiB, {r['seconds']:.0f} s", flush=True)
    for name, row in sorted(r["per_role"].items()):
        share = r["at_rss_peak"].get(name, {"processes": 0, "rss_mib": 0.0, "pss_mib": 0.0})
        print(f"    {name:<26} {row['processes']:>2} process(es), each at most RSS {row['peak_rss_mib']:6.0f} MiB "
              f"PSS {row['peak_pss_mib']:6.0f} MiB; at the RSS-sum peak: {share['processes']} with RSS "
              f"{share['rss_mib']:6.0f} MiB, PSS {share['pss_mib']:6.0f} MiB", flush=True)


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
        print_result(results[-1])
    small, large = results
    ratios = {k: large[k] / small[k] for k in ("peak_rss_gib", "peak_pss_gib")}
    print(f"ratio {large['samples']}/{small['samples']}: RSS {ratios['peak_rss_gib']:.3f}, PSS "
          f"{ratios['peak_pss_gib']:.3f} (target < 1.15, and < 4 GiB)")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "ratios": ratios, "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
