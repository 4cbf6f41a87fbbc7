"""One training loop for every learner: seeded, device-agnostic, checkpointed each epoch and resumable."""
from __future__ import annotations

import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from pipeline.models import learner_kwargs, make_learner, reads_captions
from pipeline.spec import TrainSpec

TRAIN_VERSION = 2  # 2: logit scales init 1/0.07 and capped at 100 (CLIP, cosine and text heads)
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_context(device: torch.device) -> tuple[DistributedContext, torch.device]:
    """From torchrun's environment: join the process group (NCCL on GPUs, gloo on CPUs) and pick this rank's GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext(), device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size()), device


@dataclass
class TrainData:
    images: torch.Tensor  # uint8 (N, H, W, 3)
    labels: torch.Tensor  # long (N,), class index or -1 for open-world samples
    captions: list[str]


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device: cuda asked but no CUDA device is visible")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def to_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    return images.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def build_learner(kind: str, cfg: TrainSpec, class_counts: list[int], class_names: list[str] | None = None):
    return make_learner(kind, **learner_kwargs(kind, cfg, num_classes=len(class_counts), class_counts=class_counts,
                                               class_names=class_names))


def train(kind: str, data: TrainData, class_counts: list[int], cfg: TrainSpec, seed: int, work_dir: Path,
          progress: Callable[[int, int, dict], None] | None = None,
          class_names: list[str] | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """Train a learner; resumes from ``work_dir/checkpoint.pt`` when a previous attempt was killed.

    Under torchrun every rank takes its share of each global batch, gradients are averaged by DDP (CLIP's loss
    gathers features across ranks), and rank 0 alone writes checkpoints."""
    ctx, device = distributed_context(pick_device(cfg.device))
    torch.manual_seed(seed)
    learner = build_learner(kind, cfg, class_counts, class_names).to(device)
    if ctx.world > 1:
        learner.distribute(ctx.rank, ctx.world)
        if device.type == "cuda":  # batch statistics over the global batch (SyncBatchNorm needs CUDA)
            learner = torch.nn.SyncBatchNorm.convert_sync_batchnorm(learner)
        model = torch.nn.parallel.DistributedDataParallel(learner, device_ids=[device.index] if device.type == "cuda"
                                                          else None)
    else:
        model = learner
    keep = torch.ones(len(data.labels), dtype=torch.bool) if learner.uses_unlabeled else data.labels >= 0
    index = torch.nonzero(keep).squeeze(1)
    if len(index) == 0:
        raise RuntimeError(f"{kind}: the subset has no training samples this learner can use")
    tokens = learner.tokenize([data.captions[i] for i in index.tolist()]) if reads_captions(kind) else None
    images, labels = data.images[index], data.labels[index]

    steps_per_epoch = math.ceil(len(index) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = min(steps_per_epoch, total_steps // 10 + 1)
    opt = torch.optim.AdamW([p for p in learner.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total_steps - warmup))))

    log: list[dict] = []
    start_epoch = 0
    ckpt_path = work_dir / CHECKPOINT
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        learner.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        log, start_epoch = state["log"], state["epoch"] + 1

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    for epoch in range(start_epoch, cfg.epochs):
        learner.train()
        order = torch.randperm(len(index), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        started, loss_sum = time.time(), 0.0
        for step in range(steps_per_epoch):
            batch_idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size][ctx.rank::ctx.world]
            batch = {"images": to_float(images[batch_idx], device), "labels": labels[batch_idx].to(device)}
            if tokens is not None:
                batch["tokens"] = tokens[batch_idx].to(device)
            step_rng = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 10_007 + step)
            with autocast:
                loss = model(batch, step_rng)  # Learner.forward is its loss (DDP hooks forward)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
        seconds = time.time() - started
        log.append({"epoch": epoch, "loss": loss_sum / steps_per_epoch, "seconds": seconds,
                    "images_per_s": len(index) / seconds if seconds else float("nan")})
        if ctx.is_main:
            _save_atomic({"model": learner.state_dict(), "optimizer": opt.state_dict(),
                          "scheduler": sched.state_dict(), "log": log, "epoch": epoch}, ckpt_path)
        if progress:
            progress(epoch + 1, cfg.epochs, log[-1])
    return learner, log


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
