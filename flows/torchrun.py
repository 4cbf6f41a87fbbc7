"""Training runs in their own processes: one rank of a DDP run (torchrun), or one of several concurrent runs.

A train run that asks for N > 1 GPUs is started as

    python -m torch.distributed.run --standalone --nproc_per_node=N -m tailstudy.flows.torchrun \
        --spec SPEC --workspace WORKSPACE --train-key KEY

on the GPU machine its flow run landed on (a GPU work pool pins it there). Every rank builds the same train node of the
study graph; the DDP part belongs to the training loop (``pipeline/train.py``): it initialises the process group from
torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE), uses the GPU LOCAL_RANK names, splits each epoch's batches
across ranks and lets rank 0 write the artifact (the workspace's atomic rename lets only one copy land anyway).

The executor (flows/executor.py) starts concurrent runs the same way with N = 1, plain ``python -m tailstudy.flows.torchrun``,
with ``--device cuda:I`` (the GPU it pinned the run to) and ``--threads T`` (its share of the CPU cores): a process of
its own keeps torch's global seed and thread pool to one run.

This module never imports Prefect: it is also the per-rank entry point.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

from tailstudy import stages as S
from tailstudy.errors import InputError, TailstudyError
from tailstudy.spec import load_spec
from tailstudy.store import Workspace


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpus(gpus: int) -> None:
    """A run that asks for `gpus` GPUs must see them (0 = use the spec's train.device, CPU included)."""
    if gpus < 0:
        raise InputError(f"gpus={gpus}: must be 0 (the spec's device), 1, or the number of GPUs for torchrun")
    if gpus == 0:
        return
    seen = visible_gpus()
    if seen < gpus:
        raise InputError(f"gpus={gpus}: this machine sees {seen} CUDA device(s); run it on a GPU work pool "
                         f"(deployment train-gpu) or ask for fewer")


def torchrun_command(nproc: int, spec_path: str | Path, workspace: str | Path, train_key: str,
                     force: bool = False, device: str | None = None, threads: int | None = None) -> list[str]:
    launcher = ["torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m"] if nproc > 1 else []
    command = [sys.executable, "-m", *launcher, "tailstudy.flows.torchrun", "--spec", str(spec_path), "--workspace",
               str(workspace), "--train-key", train_key]
    command += ["--device", device] if device else []
    command += ["--threads", str(threads)] if threads else []
    return command + (["--force"] if force else [])


def launch(nproc: int, spec_path: str | Path, workspace: str | Path, train_key: str, force: bool = False,
           device: str | None = None, threads: int | None = None) -> None:
    """Run one training run in child processes (`nproc` local GPUs through torchrun when nproc > 1, else one
    process on `device`); returns when every rank has finished."""
    if nproc > 1:
        check_gpus(nproc)
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    # the child's lines (its epochs, see main) reach this process's stderr as they come; the last one explains a failure
    child = subprocess.Popen(torchrun_command(nproc, spec_path, workspace, train_key, force, device, threads),
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = ""
    for line in child.stderr:
        if line.startswith("error: "):  # the child's one-line failure (see __main__): said once, by this process
            last = line.strip()
            continue
        sys.stderr.write(line)
        last = line.strip() or last
    if child.wait() != 0:
        if child.returncode == 2 and last.startswith("error: "):
            raise InputError(last[len("error: "):])
        raise RuntimeError(f"train run {train_key} ({nproc} process(es)) exited with {child.returncode}"
                           + (f": {last}" if last else ""))


def epoch_lines(label: str):
    """Progress of a run in a child process: one line per epoch on stderr (rank 0), which `launch` passes on."""
    def progress(epoch: int, epochs: int, log: dict) -> None:
        if os.environ.get("RANK", "0") == "0":
            print(f"  train {label}: epoch {epoch}/{epochs}, loss {log['loss']:.3f}, "
                  f"{log['samples_per_s']:.0f} samples/s", file=sys.stderr, flush=True)

    return progress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tailstudy.flows.torchrun", description="one rank of a DDP training run")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--train-key", required=True)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ws = Workspace(args.workspace)
    graph = S.plan_study(load_spec(args.spec))
    S.resolve_all(graph.nodes, ws)  # train keys hash the subsets, which the executor built before this process
    node = next((n for n in graph.nodes if n.key == args.train_key and S.stage_of(n).isolated), None)
    if node is None:
        raise InputError(f"{args.spec}: no training run with key {args.train_key}")
    result = S.run_node(ws, node, args.force, args.device, epoch_lines(node.label))
    if os.environ.get("RANK", "0") == "0":
        print(f"train {result.key}: {result.status} ({os.environ.get('WORLD_SIZE', '1')} ranks)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TailstudyError as exc:  # one line, as the CLI says it (a full disk, a bad spec): launch() passes it on
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
