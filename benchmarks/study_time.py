"""Where a study's time went: the process-seconds of every stage it built, by stage and learner, and how much of the
training time was spent waiting for data, from a workspace that ran it (read only).

    .venv/bin/python benchmarks/study_time.py WORKSPACE [--spec data/studies/default.yaml] [--cores N]

Each artifact's manifest records the seconds its build took (`seconds`); each training run's train_log records, per
epoch, its seconds and the share of them spent waiting for the next batch (`data_wait_frac`). An artifact that two
cells share is counted once. The sum over the study's artifacts, divided by the cores, is the wall time the study
cannot go below on that many cores however its builds are packed (each build runs on one core: one torch thread per
training process); the difference to a measured wall time is what start-up, serial stages and the last runs' tail
cost. Artifacts the study plans but the workspace lacks are listed and left out of the sum.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tailstudy.errors import TailstudyError  # noqa: E402
from tailstudy.spec import default_spec_path, load_spec  # noqa: E402
from tailstudy.stages import plan_study, resolve_all  # noqa: E402
from tailstudy.store import Workspace  # noqa: E402


def study_time(ws: Workspace, spec_path: Path) -> tuple[dict, list[str]]:
    """-> ({(stage, learner): {"nodes", "seconds", "epoch_seconds", "data_seconds"}}, artifacts not built)."""
    graph = plan_study(load_spec(spec_path))
    resolve_all(graph.nodes, ws)
    rows: dict = defaultdict(lambda: {"nodes": 0, "seconds": 0.0, "epoch_seconds": 0.0, "data_seconds": 0.0})
    seen, missing = set(), []
    for node in graph.nodes:
        if node.key is None or not (ws.root / node.stage / node.key / "manifest.json").is_file():
            missing.append(f"{node.stage} {node.label}")
            continue
        if (node.stage, node.key) in seen:  # shared by two cells: built once
            continue
        seen.add((node.stage, node.key))
        art = ws.artifact(node.stage, node.key)
        row = rows[(node.stage, node.config["learner"] if node.stage == "train" else "")]
        row["nodes"] += 1
        row["seconds"] += float(art.manifest().get("seconds", 0.0))
        if node.stage == "train":
            log = pq.read_table(art.path / "train_log.parquet", columns=["seconds", "data_wait_frac"]).to_pydict()
            row["epoch_seconds"] += sum(log["seconds"])
            row["data_seconds"] += sum(s * f for s, f in zip(log["seconds"], log["data_wait_frac"]))
    return dict(rows), missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--spec", type=Path, default=None, help="the study's spec (default: the default study)")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                        else os.cpu_count() or 1, help="cores to divide the process-seconds by (default: this machine's)")
    args = parser.parse_args(argv)
    if not (args.workspace / "catalog.duckdb").is_file() and not (args.workspace / "corpus").is_dir():
        print(f"error: {args.workspace}: not a workspace (no catalog.duckdb, no corpus/ folder)", file=sys.stderr)
        return 2
    if args.cores < 1:
        print(f"error: --cores {args.cores}: must be at least 1", file=sys.stderr)
        return 2
    spec_path = args.spec or default_spec_path()
    try:
        rows, missing = study_time(Workspace(args.workspace), spec_path)
    except TailstudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{spec_path} in {args.workspace}: {sum(r['nodes'] for r in rows.values())} artifacts"
          + (f"; not built, left out: {', '.join(missing)}" if missing else ""))
    print(f"{'stage':<10} {'learner':<22} {'artifacts':>9} {'process-s':>10}  waiting for data")
    for (stage, learner), row in sorted(rows.items()):
        wait = (f"  {row['data_seconds']:7.0f} s ({row['data_seconds'] / row['epoch_seconds']:.0%} of its epochs)"
                if row["epoch_seconds"] else "")
        print(f"{stage:<10} {learner:<22} {row['nodes']:>9} {row['seconds']:>10.0f}{wait}")
    total = sum(r["seconds"] for r in rows.values())
    data = sum(r["data_seconds"] for r in rows.values())
    print(f"sum: {total:,.0f} process-seconds = at least {total / args.cores / 60:.1f} min on {args.cores} cores, "
          f"{data / args.cores / 60:.1f} min of it training runs waiting for data, "
          f"{(total - data) / args.cores / 60:.1f} min the rest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
