"""One training loop for every learner: seeded, device-agnostic, checkpointed each epoch and resumable."""
from __future__ import annotations

import ctypes
import gc
import math
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from tailstudy.env import usable_cores
from tailstudy.items import num_batches
from tailstudy.models import learner_kwargs, make_learner, reads_captions
from tailstudy.spec import TrainSpec
from tailstudy.store import disk_full_error, is_disk_full, temp_path

try:
    import psutil  # in the lock (via dask distributed), not a declared dependency: without it, workers are left out
except ImportError:  # pragma: no cover
    psutil = None

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
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size()), device


MAX_AUTO_PARALLEL = 4  # training runs at once by default: more would multiply memory for little gain on CPUs


def cpu_plan(cfg: TrainSpec, jobs: int = 1) -> tuple[int, int]:
    """(training runs at once, torch threads per process) on CPU. Each process gets its share of the cores: torch's
    default (a thread per core in every process) collapses as soon as anything else runs beside it, since its
    threads spin at every barrier while the cores are busy elsewhere (measured: 41-87 against 370-980 images/s with
    one thread per process, benchmarks/bench_threads.py)."""
    cores = usable_cores()
    parallel = cfg.parallel or max(1, min(cores, MAX_AUTO_PARALLEL))
    return parallel, cfg.threads or max(1, cores // (parallel + max(jobs, 1)))


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device: cuda asked but no CUDA device is visible")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def _save_atomic(obj: dict, path: Path) -> None:
    """No partial file survives a failed save; a full disk is one line (torch.save says '... unexpected pos ...')."""
    tmp = temp_path(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException as err:
        written = tmp.stat().st_size if tmp.exists() else 0
        tmp.unlink(missing_ok=True)
        if is_disk_full(err):
            raise disk_full_error(path, written) from None
        raise


def build_learner(kind: str, cfg: TrainSpec, class_counts: list[int], class_names: list[str] | None = None,
                  head_embeddings: torch.Tensor | None = None):
    return make_learner(kind, **learner_kwargs(kind, cfg, num_classes=len(class_counts), class_counts=class_counts,
                                               class_names=class_names, head_embeddings=head_embeddings))


def _wrap(learner, ctx: DistributedContext, device: torch.device):
    if ctx.world <= 1:
        return learner
    learner.distribute(ctx.rank, ctx.world)
    if device.type == "cuda":  # batch statistics over the global batch (SyncBatchNorm needs CUDA)
        learner = torch.nn.SyncBatchNorm.convert_sync_batchnorm(learner)
    return torch.nn.parallel.DistributedDataParallel(learner, device_ids=[device.index] if device.type == "cuda"
                                                     else None)


def schedule(cfg: TrainSpec, num_samples: int) -> tuple[int, int, int]:
    """-> (steps per epoch, total steps, warm-up steps); `max_steps` caps the total (the schedule keeps its shape)."""
    steps_per_epoch = num_batches(num_samples, cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    return steps_per_epoch, total_steps, min(steps_per_epoch, total_steps // 10 + 1)


def decays(name: str, param: torch.Tensor) -> bool:
    """open_clip's rule (open_clip_train.main): weight decay on weight matrices and embeddings only -- never on gains,
    biases, norms or temperatures (`logit_scale`), which decay would pull toward zero for no regularising gain."""
    return param.ndim >= 2 and not any(part in name for part in ("bn", "ln", "bias", "logit_scale"))


def _optimizer(learner, cfg: TrainSpec, total_steps: int, warmup: int):
    named = [(n, p) for n, p in learner.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if decays(n, p)], "weight_decay": cfg.weight_decay},
              {"params": [p for n, p in named if not decays(n, p)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    cosine = lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total_steps - warmup))))  # noqa
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warmup if s < warmup else cosine(s))
    return opt, sched


def train(kind: str, data, class_counts: list[int], cfg: TrainSpec, seed: int, work_dir: Path,
          progress: Callable[[int, int, dict], None] | None = None, class_names: list[str] | None = None,
          head_embeddings: torch.Tensor | None = None) -> tuple[torch.nn.Module, list[dict]]:
    """Train a learner on `data` (`tailstudy.data.ShardData`: items streamed from shards); resumes
    from ``work_dir/checkpoint.pt`` when a previous attempt was killed.

    Under torchrun every rank takes its share of each global batch, gradients are averaged by DDP (CLIP's loss
    gathers features across ranks), and rank 0 alone writes checkpoints."""
    ctx, device = distributed_context(pick_device(cfg.device))
    torch.manual_seed(seed)
    learner = build_learner(kind, cfg, class_counts, class_names, head_embeddings).to(device)
    if cfg.channels_last:
        learner = learner.to(memory_format=torch.channels_last)
    model = _wrap(learner, ctx, device)
    step_fn = torch.compile(model) if cfg.compile else model
    source = data.for_learner(learner, reads_captions(kind), cfg.batch_size, cfg.workers, device)  # a DataSource
    if source.num_samples == 0:
        raise RuntimeError(f"{kind}: the subset has no training samples this learner can use")
    steps_per_epoch, total_steps, warmup = schedule(cfg, source.num_samples)
    size = learner.preprocess_cfg()["size"]
    map_large_blocks(cfg.batch_size * 3 * 4 * (size * size if isinstance(size, int) else size[0] * size[1]))
    opt, sched = _optimizer(learner, cfg, total_steps, warmup)

    try:
        return learner, _epochs(learner, step_fn, source, opt, sched, device, cfg, seed, ctx, work_dir,
                                math.ceil(total_steps / steps_per_epoch), steps_per_epoch, total_steps, progress)
    finally:
        source.close()  # data workers end with the run, not when the garbage collector gets to them


def _epochs(learner, step_fn, source, opt, sched, device, cfg: TrainSpec, seed: int, ctx: DistributedContext,
            work_dir: Path, last_epoch: int, steps_per_epoch: int, total_steps: int, progress) -> list[dict]:
    """The epochs not done yet (resumed from the checkpoint a killed attempt left) -> the log of every epoch."""
    log: list[dict] = []
    start_epoch = 0
    ckpt_path = work_dir / CHECKPOINT
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        learner.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        log, start_epoch = state["log"], state["epoch"] + 1
    epochs = min(cfg.epochs, last_epoch)
    for epoch in range(start_epoch, epochs):
        learner.train()
        steps = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
        batches = source.batches(epoch, seed, ctx.rank, ctx.world)
        log.append({"epoch": epoch, **run_epoch(step_fn, batches, steps, opt, sched, device, cfg, seed, epoch, ctx)})
        if ctx.is_main:
            _save_atomic({"model": learner.state_dict(), "optimizer": opt.state_dict(),
                          "scheduler": sched.state_dict(), "log": log, "epoch": epoch}, ckpt_path)
        if progress:
            progress(epoch + 1, epochs, log[-1])
    return log


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    images = batch["images"].to(device, non_blocking=True)
    out = {"images": images.contiguous(memory_format=torch.channels_last) if channels_last else images,
           "labels": batch["labels"].to(device, non_blocking=True)}
    if "tokens" in batch:
        out["tokens"] = batch["tokens"].to(device, non_blocking=True)
    return out


def run_epoch(model, batches, steps: int, opt, sched, device, cfg: TrainSpec, seed: int, epoch: int,
              ctx: DistributedContext) -> dict:
    """Up to `steps` optimisation steps over one epoch's batches -> the epoch's loss and throughput figures."""
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    meter = ThroughputMeter(device, ctx.world)
    loss_sum, done = 0.0, 0
    for step, batch in enumerate(meter.wrap(batches)):
        if step >= steps:
            break
        batch = _to_device(batch, device, cfg.channels_last)
        step_rng = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 10_007 + step)
        with autocast:
            loss = model(batch, step_rng)  # Learner.forward is its loss (DDP hooks forward)
        loss.backward()
        opt.step()
        sched.step()
        # the gradients go before the next forward, not after it: the activations' peak never holds them too
        opt.zero_grad(set_to_none=True)
        loss_sum += float(loss.detach())  # also a device sync, so step times are real
        meter.count(len(batch["labels"]))
        done += 1
    return {"loss": loss_sum / max(done, 1), "steps": done, **meter.summary()}


class ThroughputMeter:
    """Per-epoch samples/s (per device under DDP), the fraction of the epoch spent waiting for data, peak memory."""

    def __init__(self, device: torch.device, world: int):
        self.device, self.world = device, world
        self.wait, self.samples = 0.0, 0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.started = time.perf_counter()

    def wrap(self, batches):
        t = time.perf_counter()
        it = iter(batches)  # starting data workers is waiting for data too
        self.wait += time.perf_counter() - t
        while True:
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.wait += time.perf_counter() - t
            yield batch

    def count(self, n: int) -> None:
        self.samples += n

    def summary(self) -> dict:
        seconds = time.perf_counter() - self.started
        rate = self.samples / seconds if seconds else float("nan")
        return {"seconds": seconds, "samples": self.samples * self.world, "samples_per_s": rate * self.world,
                "samples_per_s_per_device": rate, "data_wait_frac": self.wait / seconds if seconds else float("nan"),
                "peak_rss_mb": peak_rss_mb(),
                "peak_gpu_mb": torch.cuda.max_memory_allocated(self.device) / 2 ** 20
                if self.device.type == "cuda" else float("nan")}


LARGE_BATCH_MB = 8  # input batches at least this large (e.g. 16 x 224 px): big blocks are mapped directly


def map_large_blocks(batch_bytes: int) -> None:
    """glibc keeps freed blocks below its mmap threshold (which raises itself up to 32 MB) in the heap, where the next
    step's activations, interleaved with the optimiser state, cannot all reuse them: a 224 px RN50 step on CPU left the
    training process ~0.5 GB above its live data. A run whose input batch is large maps blocks of 1 MB and more
    directly, so freed activations go back to the system at once; the page faults that costs are small beside such a
    step. Runs with small inputs keep glibc's default (their short steps would pay the faults every step)."""
    if batch_bytes < LARGE_BATCH_MB * 2 ** 20:
        return
    try:
        ctypes.CDLL(None).mallopt(-3, 2 ** 20)  # M_MMAP_THRESHOLD (fixed from now on: no self-raising)
    except (OSError, AttributeError):  # not glibc
        return
    release_memory()  # what the heap holds free now (e.g. the text tower a supervised learner dropped) goes back too


def release_memory() -> None:
    """Hand a finished run's memory back to the system: collect the reference cycles that can still hold its model
    and optimiser, then have glibc return its free heap pages (freed memory otherwise stays with the process, and the
    next stage's peak lands on top of it). A no-op where the C library is not glibc."""
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_mb() -> float:
    """High-water RSS of this process plus the current RSS of its child processes (the data workers, which persist
    through the run), in MB."""
    total = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if psutil is None:
        return total / 2 ** 20
    for child in psutil.Process().children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # exited meanwhile
            pass
    return total / 2 ** 20


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
