"""One training run of the default study on a busy machine: torch's default thread pool against one thread per process.

    .venv/bin/python benchmarks/bench_threads.py                  # 2 busy loops beside, 3 interleaved repetitions
    .venv/bin/python benchmarks/bench_threads.py --busy 0         # the same on an idle machine
    .venv/bin/python benchmarks/bench_threads.py --study          # the whole default study beside the busy loops

`--study`: `tailstudy run` of the embedded default study from nothing, in a fresh workspace, beside the busy loops;
prints its wall time and whether it wrote its report within `--within` minutes (45: issue 21's bound for 2 cores).

Steps: (1) build the upstream of one training run of the embedded default study (corpus, match, curate of its base
level) in a temporary workspace, or reuse `--workspace DIR`; (2) start `--busy` processes that spin on a core each
(what a second study, `train.parallel`, or any other job does to a shared machine), bounded by `--timeout`;
(3) train that run (`--learner`, default clip, `--steps` optimisation steps) in a fresh process twice per repetition,
interleaved: with torch's default (one thread per core, which the previous version used) and with the thread count
`tailstudy.train.cpu_plan` gives it now (`train.threads` unset). Samples/s are read from the run's own train log (the
training loop alone, not process start); the table shows medians and the median of the per-repetition ratios.
The busy loops are killed when the benchmark ends, also on an error or Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from tailstudy import stages as S
from tailstudy.spec import default_spec_path, load_spec
from tailstudy.store import Workspace
from tailstudy.train import cpu_plan, usable_cores


def prepared(workspace: Path, learner: str, steps: int) -> tuple[Path, str]:
    """A one-run spec (the default study's base cell, `learner`, seed 0, `steps` steps) and its train key, with the
    run's upstream built."""
    data = yaml.safe_load(default_spec_path().read_text())
    data.update(name="bench-threads", factors={}, learners=[learner], seeds=[0])
    data["train"] = {**data["train"], "max_steps": steps}
    spec_path = workspace / "bench-threads.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    graph = S.plan_study(load_spec(spec_path))
    train = graph.of("train")[0]
    S.run_local(Workspace(workspace), [train.upstream["curate"]])
    S.resolve_all(graph.nodes, Workspace(workspace))
    return spec_path, train.key


def train_rate(spec: Path, workspace: Path, key: str, threads: int | None) -> float:
    """Samples/s of one forced training run in a fresh process (`threads` None: torch's default)."""
    command = [sys.executable, "-m", "tailstudy.flows.torchrun", "--spec", str(spec), "--workspace", str(workspace),
               "--train-key", key, "--force"] + (["--threads", str(threads)] if threads else [])
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    log = pq.read_table(workspace / "train" / key / "train_log.parquet").to_pylist()
    return sum(e["samples"] for e in log) / sum(e["seconds"] for e in log)


def busy_loops(count: int, timeout: float) -> list[subprocess.Popen]:
    """`count` processes spinning on a core each, for at most `timeout` seconds."""
    spin = f"import time\nend = time.time() + {timeout}\nwhile time.time() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]


def whole_study(args) -> int:
    """The default study from nothing beside `args.busy` busy loops -> exit 0 when its report came within the bound."""
    with tempfile.TemporaryDirectory(prefix="bench-threads-study-") as tmp:
        workspace = args.workspace or Path(tmp)
        workspace.mkdir(parents=True, exist_ok=True)
        busy = busy_loops(args.busy, max(args.timeout, args.within * 60 * 2))
        started = time.perf_counter()
        try:
            run = subprocess.run([str(Path(sys.executable).with_name("tailstudy")), "run", "-w", str(workspace)],
                                 stdout=subprocess.DEVNULL)
        finally:
            for proc in busy:
                proc.kill()
        minutes = (time.perf_counter() - started) / 60
        report = next(workspace.glob("report/*/report.html"), None)
    ok = run.returncode == 0 and report is not None and minutes <= args.within
    print(f"{usable_cores()} cores, {args.busy} busy processes: the default study from nothing took {minutes:.1f} min "
          f"(exit {run.returncode}, report {'written' if report else 'missing'}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print(f"  {'PASS' if ok else 'FAIL'}  report written within {args.within:g} minutes")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=2, help="spinning processes beside the run (default 2)")
    parser.add_argument("--learner", default="clip")
    parser.add_argument("--steps", type=int, default=40, help="optimisation steps per run (default 40)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workspace", type=Path, default=None, help="reuse this workspace (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=1800, help="the busy loops end after this many seconds")
    parser.add_argument("--study", action="store_true", help="run the whole default study beside the busy loops")
    parser.add_argument("--within", type=float, default=45, help="--study: minutes it should take at most")
    args = parser.parse_args(argv)
    if args.study:
        return whole_study(args)

    with tempfile.TemporaryDirectory(prefix="bench-threads-") as tmp:
        workspace = args.workspace or Path(tmp)
        workspace.mkdir(parents=True, exist_ok=True)
        spec, key = prepared(workspace, args.learner, args.steps)
        ours = cpu_plan(load_spec(spec).train)[1]
        busy = busy_loops(args.busy, args.timeout)
        rates: dict[str, list[float]] = {"default": [], "ours": []}
        try:
            for _ in range(args.repeats):
                rates["default"].append(train_rate(spec, workspace, key, None))
                rates["ours"].append(train_rate(spec, workspace, key, ours))
        finally:
            for proc in busy:
                proc.kill()
    ratios = [o / d for o, d in zip(rates["ours"], rates["default"])]
    print(f"{usable_cores()} cores, {args.busy} busy processes, learner {args.learner}, {args.steps} steps, "
          f"{args.repeats} interleaved repetitions ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    print("| threads per process | samples/s (median) | per repetition |\n|---|---|---|")
    print(f"| torch default ({usable_cores()}) | {statistics.median(rates['default']):.1f} | "
          f"{', '.join(f'{r:.1f}' for r in rates['default'])} |")
    print(f"| tailstudy ({ours}) | {statistics.median(rates['ours']):.1f} | {', '.join(f'{r:.1f}' for r in rates['ours'])} |")
    print(f"ratio (median of per-repetition ratios): {statistics.median(ratios):.2f}x "
          f"({', '.join(f'{r:.2f}' for r in ratios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
