"""Training throughput of tailstudy's loop beside open_clip's own trainer, on the same shards and model, in one run.

    .venv/bin/python benchmarks/bench_train.py                      # tiny config, CPU or CUDA; ~30 s on 2 idle cores
    .venv/bin/python benchmarks/bench_train.py --arch RN50 --samples 8000 --epochs 3   # a GPU-sized run

Steps: (1) write a small synthetic corpus with ``pipeline.corpus.synthetic.generate`` (webdataset .tar shards of PNG +
txt), or reuse one with ``--corpus DIR``; (2) train each learner (``clip``, ``sl``) with ``pipeline.train.train`` on the
decoded shards; (3) train the same open_clip model config on the same shards with ``open_clip_train.main.main`` (single
process, webdataset, no external logging, logs and its final checkpoint in a temporary directory that is deleted).

Two figures per learner, both in images/s:

* ``step``: the epochs after the warm-up epoch(s), training steps only. Ours: the per-epoch time that ``train`` logs
  (images already decoded in memory as uint8; includes the uint8->float conversion and host->device copy, excludes the
  per-epoch checkpoint). open_clip_train: each epoch's wall time minus the time its loop waited for the next batch
  (PNG decoding, augmentation and tokenisation happen on the fly inside that wait when --workers 0).
* ``end-to-end``: the whole run, images trained / wall seconds. Ours: decoding all shards once + ``train`` (learner
  build, tokenisation, every epoch including warm-up, a checkpoint per epoch). open_clip_train: the whole ``main()``
  call (model build, data pipeline, every epoch decoding on the fly, its final checkpoint).

open_clip_train trains CLIP only; the ``sl`` row compares our supervised learner (image tower + linear head) against
that same open_clip_train CLIP run, for reference, not like for like.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pipeline  # noqa: E402,F401  (sets HF_HUB_OFFLINE=1 etc. before open_clip is imported)

MAX_CORPUS_IMAGE_SIZE = 128  # CorpusSpec.image_size's upper bound; larger model inputs are resized from it


# ---------------------------------------------------------------- corpus

def ensure_corpus(args, model_image_size: int) -> tuple[Path, float]:
    """-> (corpus dir, seconds spent generating it; 0 when reused)."""
    from pipeline.corpus.synthetic import generate
    from pipeline.spec import CorpusSpec, EvalSpec

    out = Path(args.corpus)
    if (out / "world.json").is_file():
        return out, 0.0
    if (out / "shards").exists():
        raise SystemExit(f"{out}: has shards/ but no world.json (half-written?); remove it or pick another dir")
    size = args.image_size or min(model_image_size, MAX_CORPUS_IMAGE_SIZE)
    cfg = CorpusSpec(concepts=args.concepts, open_concepts=0, samples=args.samples, open_samples=0,
                     profile="uniform", min_count=1, image_size=size, seed=args.seed)
    started = time.perf_counter()
    generate(cfg, EvalSpec(per_class=1), out)
    return out, time.perf_counter() - started


def load_corpus(corpus: Path, image_size: int):
    """Decode every training shard into memory (resized to the model's input), as the train stage does.

    -> (TrainData, class counts, class names, shard paths, decode seconds, stored image size). Labels are the
    ground-truth target concepts (-1 for open-world concepts, which only clip trains on)."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from pipeline.corpus.shards import load_images
    from pipeline.train import TrainData

    world = json.loads((corpus / "world.json").read_text())
    targets = world["targets"]
    names = {c["concept_id"]: c["name"] for c in world["concepts"]}
    captions = pq.read_table(corpus / "captions.parquet", columns=["sample_id", "caption", "shard", "key"]).to_pandas()
    truth = pq.read_table(corpus / "truth.parquet", columns=["sample_id", "concept_id"]).to_pandas()
    concept_of = dict(zip(truth.sample_id, truth.concept_id))
    shards = [corpus / "shards" / s for s in sorted(captions.shard.unique())]

    started = time.perf_counter()
    images = load_images(shards, set(captions.key), image_size)
    stack = np.stack([images[k] for k in captions.key])
    decode_seconds = time.perf_counter() - started

    index_of = {cid: i for i, cid in enumerate(targets)}
    labels = [index_of.get(concept_of[s], -1) for s in captions.sample_id]
    counts = [0] * len(targets)
    for lab in labels:
        if lab >= 0:
            counts[lab] += 1
    data = TrainData(torch.from_numpy(stack), torch.tensor(labels, dtype=torch.long), captions.caption.tolist())
    return data, counts, [names[c] for c in targets], shards, decode_seconds, world["image_size"]


# ---------------------------------------------------------------- tailstudy's loop

def run_ours(kind: str, data, counts, names, args, device, decode_seconds: float) -> dict:
    from pipeline.spec import TrainSpec
    from pipeline.train import train

    cfg = TrainSpec(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=device.type)
    used = int(len(data.labels)) if kind == "clip" else int((data.labels >= 0).sum())
    captured = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="bench-ours-") as work:
        try:
            with _quiet_logging(args.verbose) as captured:
                started = time.perf_counter()
                _, log = train(kind, data, counts, cfg, args.seed, Path(work), class_names=names)
                total = time.perf_counter() - started
        except BaseException:
            sys.stderr.write(captured.getvalue()[-4000:])
            raise
    measured = log[args.warmup_epochs:]
    step_seconds = sum(e["seconds"] for e in measured)
    return {
        "images_per_epoch": used,
        "epoch_seconds": [round(e["seconds"], 4) for e in log],
        "step_images_per_s": used * len(measured) / step_seconds,
        "end_to_end_images_per_s": used * len(log) / (decode_seconds + total),
        "decode_seconds": decode_seconds,
        "train_call_seconds": total,
    }


# ---------------------------------------------------------------- open_clip_train

class _CountingLoader:
    """Wraps open_clip_train's dataloader: counts images and the time spent waiting for each batch."""

    def __init__(self, loader, sync):
        self.loader, self.sync = loader, sync
        self.num_batches, self.num_samples = loader.num_batches, loader.num_samples
        self.images, self.wait = 0, 0.0

    def __iter__(self):
        it = iter(self.loader)
        while True:
            self.sync()  # on CUDA: finish the previous step, so its GPU time is not booked as data time
            started = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                self.wait += time.perf_counter() - started
                return
            self.wait += time.perf_counter() - started
            self.images += len(batch[0])
            yield batch


@contextlib.contextmanager
def _quiet_logging(verbose: bool):
    """Keep library logging out of the table (unless --verbose) and undo its changes afterwards: open_clip warns
    through the root logger (which installs a stderr handler on first use), and open_clip_train's setup_logging adds
    another stderr handler and sets every logger to INFO. Yields the captured text (for error reports)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: lg.level for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    sink = io.StringIO()
    if not verbose:
        for h in handlers:
            root.removeHandler(h)
    try:
        with contextlib.redirect_stderr(sys.stderr if verbose else sink):
            yield sink
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)
        for name, lg in list(logging.root.manager.loggerDict.items()):
            if isinstance(lg, logging.Logger):  # setup_logging also turned placeholders into loggers at INFO
                lg.setLevel(levels.get(name, logging.NOTSET))


@contextlib.contextmanager
def _webdataset_eof_fix():
    """open_clip_train 3.3.0 with webdataset >= 0.2.96 (the lock pins 0.2.111) fails on its first shard end:
    webdataset's tar_file_expander now yields an end-of-shard marker ``{}`` that open_clip_train's
    group_by_keys_nothrow reads as a file (KeyError: 'fname'; open_clip#935, webdataset#384). Upstream open_clip's
    fix is ``tar_file_expander(..., eof_value=None)``; apply exactly that for the duration of the run. Yields whether
    the fix was needed."""
    import inspect

    from open_clip_train import data as ocd

    original = ocd.tarfile_to_samples_nothrow
    needed = ("eof_value" in inspect.signature(ocd.tar_file_expander).parameters
              and "eof_value" not in inspect.getsource(original))

    def tarfile_to_samples_nothrow(src, handler=ocd.log_and_continue):
        streams = ocd.url_opener(src, handler=handler)
        files = ocd.tar_file_expander(streams, handler=handler, eof_value=None)
        return ocd.group_by_keys_nothrow(files, handler=handler)

    if needed:
        ocd.tarfile_to_samples_nothrow = tarfile_to_samples_nothrow
    try:
        yield needed
    finally:
        ocd.tarfile_to_samples_nothrow = original


def run_open_clip_train(shards: list[Path], n_samples: int, args, device) -> dict:
    import open_clip
    import open_clip_train.main as oct_main
    import torch

    from pipeline.models.learners import CONFIG_DIR

    open_clip.add_model_config(CONFIG_DIR)  # so --model tiny resolves
    for var in ("WORLD_SIZE", "SLURM_NTASKS"):  # never let it initialise torch.distributed
        os.environ.pop(var, None)

    steps_per_epoch = math.ceil(n_samples / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup = min(steps_per_epoch, total_steps // 10 + 1)  # as pipeline.train.train
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    epochs: list[dict] = []
    original = oct_main.train_one_epoch

    def timed_epoch(model, data, loss, epoch, *rest, **kw):
        counting = _CountingLoader(data["train"].dataloader, sync)
        data = {**data, "train": dataclasses.replace(data["train"], dataloader=counting)}
        sync()
        started = time.perf_counter()
        original(model, data, loss, epoch, *rest, **kw)
        sync()
        epochs.append({"seconds": time.perf_counter() - started, "wait": counting.wait, "images": counting.images})

    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    with tempfile.TemporaryDirectory(prefix="bench-open-clip-train-") as logs:
        argv = [
            "--train-data", "::".join(str(s) for s in shards),
            "--train-num-samples", str(n_samples),
            "--dataset-type", "webdataset",
            "--model", args.arch,
            "--batch-size", str(args.batch_size),
            "--epochs", str(args.epochs),
            "--lr", str(args.lr),
            "--wd", "0.05",  # TrainSpec's default weight decay
            "--warmup", str(warmup),
            "--workers", str(args.workers),
            "--precision", "amp_bf16" if device.type == "cuda" else "fp32",  # ours: bf16 autocast on CUDA only
            "--device", device.type,
            "--seed", str(args.seed),
            "--logs", logs,
            "--name", "bench",
            "--report-to", "",
            "--save-frequency", "0",  # it still writes the last epoch's checkpoint, inside the temp dir
            "--log-every-n-steps", "1000000",
        ]
        oct_main.train_one_epoch = timed_epoch
        captured = io.StringIO()
        try:
            with _webdataset_eof_fix() as eof_fix, _quiet_logging(args.verbose) as captured:
                started = time.perf_counter()
                rc = oct_main.main(argv)
                total = time.perf_counter() - started
        except BaseException:
            if not args.verbose:
                sys.stderr.write(captured.getvalue()[-4000:])
            raise
        finally:
            oct_main.train_one_epoch = original
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic) = flags  # main() flips these; keep our loop on project defaults
    if rc not in (None, 0) or len(epochs) != args.epochs:
        sys.stderr.write(captured.getvalue()[-4000:])
        raise SystemExit(f"open_clip_train.main returned {rc!r} after {len(epochs)} of {args.epochs} epochs")
    measured = epochs[args.warmup_epochs:]
    return {
        "images_per_epoch": epochs[-1]["images"],
        "epoch_seconds": [round(e["seconds"], 4) for e in epochs],
        "data_wait_seconds": [round(e["wait"], 4) for e in epochs],
        "step_images_per_s": sum(e["images"] for e in measured) / sum(e["seconds"] - e["wait"] for e in measured),
        "end_to_end_images_per_s": sum(e["images"] for e in epochs) / total,
        "main_call_seconds": total,
        "webdataset_eof_fix": eof_fix,
        "argv": argv[:],
    }


# ---------------------------------------------------------------- report

LEGEND = """\
step        epochs after the warm-up, training steps only. Ours: images pre-decoded in memory. open_clip_train:
            epoch time minus the time spent waiting for batches (on-the-fly PNG decode, augment, tokenise).
end-to-end  the whole run incl. model build and warm-up epoch. Ours: + decoding all shards once, a checkpoint
            per epoch. open_clip_train: decoding every epoch, its final checkpoint.
sl rows     against the open_clip_train CLIP run (it has no supervised mode): a reference, not like for like.
noise       one run each, in sequence. On a CPU shared with other processes the figures are noisy: torch's default
            of one thread per core can slow down many-fold while another process holds a core (try --threads 1)."""


def device_label(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'' if n == 1 else 's'})"


def format_table(rows: list[dict]) -> str:
    head = ["learner", "device", "measure", "images/s (ours)", "images/s (open_clip_train)", "ratio ours/theirs"]
    body = [[r["learner"], r["device"], r["measure"], f"{r['ours']:.1f}",
             f"{r['theirs']:.1f}" + (" (clip)" if r["learner"] != "clip" else ""), f"{r['ratio']:.2f}"]
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--corpus", help="corpus directory to reuse (or to generate into and keep); default: a temp dir")
    p.add_argument("--samples", type=int, default=2000, help="training images in a generated corpus")
    p.add_argument("--concepts", type=int, default=20, help="target concepts (classes) in a generated corpus")
    p.add_argument("--image-size", type=int, default=0,
                   help=f"pixels of a generated corpus (0: the model's, at most {MAX_CORPUS_IMAGE_SIZE})")
    p.add_argument("--arch", default="tiny", help="open_clip model config: tailstudy's (tiny) or open_clip's (RN50...)")
    p.add_argument("--learners", default="clip,sl", help="comma-separated tailstudy learners")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--warmup-epochs", type=int, default=1, help="epochs left out of the step figure")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--workers", type=int, default=-1,
                   help="open_clip_train dataloader workers (0 or 1; -1: 1 on CUDA, 0 on CPU)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads for both loops (0: torch's default, one per core); 1 is steadier on a "
                        "machine whose cores other processes also use")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument("--verbose", action="store_true", help="show open_clip_train's own log")
    args = p.parse_args(argv)
    if args.epochs <= args.warmup_epochs:
        p.error("--epochs must exceed --warmup-epochs (the step figure uses the epochs after the warm-up)")
    if args.workers not in (-1, 0, 1):
        p.error("--workers: 0 or 1 (single process; a second worker would share the 2 cores anyway)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from pipeline.models.learners import image_size_of
    from pipeline.train import pick_device

    device = pick_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.workers == -1:
        args.workers = 1 if device.type == "cuda" else 0
    if device.type == "cuda":
        torch.zeros(1, device=device)  # create the CUDA context before anything is timed
    learners = [k.strip() for k in args.learners.split(",") if k.strip()]
    model_size = image_size_of(args.arch)

    tmp = None
    if not args.corpus:
        tmp = tempfile.mkdtemp(prefix="bench-corpus-")
        args.corpus = str(Path(tmp) / "corpus")
    try:
        corpus, gen_seconds = ensure_corpus(args, model_size)
        data, counts, names, shards, decode_seconds, stored_size = load_corpus(corpus, model_size)
        n = int(len(data.labels))
        label = device_label(device)
        print(f"corpus {corpus} ({'generated in %.1f s' % gen_seconds if gen_seconds else 'reused'}): {n} images "
              f"in {len(shards)} shard(s), {len(counts)} classes, stored at {stored_size} px; "
              f"decoded into memory at {data.images.shape[1]} px in {decode_seconds:.1f} s", flush=True)
        print(f"model {args.arch} at {model_size} px, batch {args.batch_size}, {args.epochs} epochs "
              f"({args.warmup_epochs} warm-up), lr {args.lr}, device {label}, open_clip_train workers {args.workers}",
              flush=True)

        ours = {}
        for kind in learners:
            ours[kind] = run_ours(kind, data, counts, names, args, device, decode_seconds)
            print(f"  ours {kind}: epochs {ours[kind]['epoch_seconds']} s", flush=True)
        theirs = run_open_clip_train(shards, n, args, device)
        print(f"  open_clip_train clip: epochs {theirs['epoch_seconds']} s, of which waiting for data "
              f"{theirs['data_wait_seconds']} s", flush=True)
        if theirs["webdataset_eof_fix"]:
            print("  note: applied upstream open_clip's webdataset fix (tar_file_expander eof_value=None) to "
                  "open_clip_train for this run; see benchmarks/README.md", flush=True)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for kind in learners:
        for measure, key in (("step", "step_images_per_s"), ("end-to-end", "end_to_end_images_per_s")):
            rows.append({"learner": kind, "device": label, "measure": measure, "ours": ours[kind][key],
                         "theirs": theirs[key], "ratio": ours[kind][key] / theirs[key]})
    print()
    print(format_table(rows))
    print()
    print(LEGEND)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "arch": args.arch, "image_size": model_size, "batch_size": args.batch_size, "epochs": args.epochs,
            "warmup_epochs": args.warmup_epochs, "samples": n, "device": label, "workers": args.workers,
            "rows": rows, "ours": ours, "open_clip_train": theirs}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
