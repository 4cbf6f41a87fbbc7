"""Multi-GPU training runs through torchrun (DDP).

A train run that asks for N > 1 GPUs is started as

    python -m torch.distributed.run --standalone --nproc_per_node=N -m flows.torchrun \
        --spec SPEC --workspace WORKSPACE --train-key KEY

on the GPU machine its flow run landed on (a GPU work pool pins it there). Every rank calls the same
``pipeline.stages.build_train``; the DDP part belongs to the training loop (``pipeline/train.py``): it initialises the
process group from torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE), uses the GPU LOCAL_RANK names, splits each
epoch's batches across ranks and lets rank 0 write the artifact (ranks hold identical weights, and the workspace's
atomic rename lets only one copy land anyway). The loop declares that it does this with ``SUPPORTS_DDP = True``; until
it does, a run that asks for more than one GPU stops with a clear error rather than train N identical copies.

This module never imports Prefect: it is also the per-rank entry point.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from pipeline.errors import InputError


def ddp_supported() -> bool:
    import pipeline.train as train

    return bool(getattr(train, "SUPPORTS_DDP", False))


def visible_gpus() -> int:
    import torch

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
    if gpus > 1 and not ddp_supported():
        raise InputError(f"gpus={gpus}: pipeline/train.py does not declare DDP support (SUPPORTS_DDP) yet; "
                         "use gpus=1")


def torchrun_command(nproc: int, spec_path: str | Path, workspace: str | Path, train_key: str,
                     force: bool = False) -> list[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "flows.torchrun", "--spec", str(spec_path), "--workspace", str(workspace),
               "--train-key", train_key]
    return command + (["--force"] if force else [])


def launch(nproc: int, spec_path: str | Path, workspace: str | Path, train_key: str, force: bool = False) -> None:
    """Run one training run on `nproc` local GPUs; returns when every rank has finished."""
    check_gpus(nproc)
    done = subprocess.run(torchrun_command(nproc, spec_path, workspace, train_key, force), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun ({nproc} GPUs) for train run {train_key} exited with {done.returncode}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.torchrun", description="one rank of a DDP training run")
    parser.add_argument("--spec", required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--train-key", required=True)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)

    from pipeline import stages as S
    from pipeline.spec import load_spec
    from pipeline.store import Workspace

    ws = Workspace(args.workspace)
    plan = S.plan_study(load_spec(args.spec))
    S.plan_runs(ws, plan)  # needs the subsets, which the train flow built before launching torchrun
    run = next((r for r in plan.runs if r.train_key == args.train_key), None)
    if run is None:
        raise InputError(f"{args.spec}: no training run with key {args.train_key}")
    result = S.build_train(ws, plan, run, args.force)
    if os.environ.get("RANK", "0") == "0":
        print(f"train {result.key}: {result.status} ({os.environ.get('WORLD_SIZE', '1')} ranks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
