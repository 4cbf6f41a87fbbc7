"""Training throughput of tailstudy's loop beside open_clip's own trainer, on the same shards and model, in one run.

    .venv/bin/python benchmarks/bench_train.py                      # tiny config, CPU or CUDA; ~30 s on 2 idle cores
    .venv/bin/python benchmarks/bench_train.py --arch RN50 --samples 8000 --epochs 3   # a GPU-sized run

Steps: (1) write a small synthetic corpus with ``tailstudy.corpus.synthetic.generate`` (webdataset .tar shards of PNG +
txt) at the model's input size, or reuse one with ``--corpus DIR``; (2) train each learner (``clip``, ``sl``) with
``tailstudy.train.train`` streaming those shards (``tailstudy.data``'s one path: a DataLoader with ``--workers``
spawned workers applying open_clip's own transforms); (3) train the same open_clip model config on the same shards
with ``open_clip_train.main.main`` (single process, webdataset, the same ``--workers``, the model as ``local-dir:`` of
its exported config, no external logging, logs and its final checkpoint in a temporary directory that is deleted).

Two figures per learner, both in samples/s:

* ``end-to-end``: samples trained / wall seconds of one call. Ours: the ``tailstudy.train.train`` call (building the
  learner and its optimiser, spawning the ``--workers`` data workers, every epoch incl. warm-up,
  the resumable checkpoint (model + optimiser state) written after every epoch). The item index (from the shards'
  recorded member indexes) is built once, before the timed calls (the train stage builds it from the subset manifest;
  open_clip_train lists shards instead).
  open_clip_train: the whole ``main(argv)`` call (argument parsing, model and optimiser build, its webdataset
  pipeline with ``--workers`` forked workers, every epoch, the one checkpoint it writes after the last epoch). Both
  decode PNGs, RandomResizedCrop, normalise and tokenise on the fly in their workers, from the same shard files.
* ``step``: the epochs after the warm-up epoch(s): samples / epoch wall time (waiting for data included, for both;
  ours: ThroughputMeter's epoch time, theirs: a wrapper around its ``train_one_epoch``).

Fairness: same shards, model config (open_clip's ``local-dir:`` of the config we train), batch, epochs, lr, weight
decay, warm-up steps, workers, precision, seed and torch thread count (``--threads``) for both sides. Repetitions are
interleaved (ours, theirs, ours, theirs, ...) so that a load change on a shared machine hits both sides alike, and
the table reports the median of the per-repetition ratios.

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
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import tailstudy  # noqa: E402,F401  (sets HF_HUB_OFFLINE=1 etc. before open_clip is imported)



# ---------------------------------------------------------------- corpus

def ensure_corpus(args, model_image_size: int) -> tuple[Path, float]:
    """-> (corpus dir, seconds spent generating it; 0 when reused)."""
    from tailstudy.corpus.synthetic import generate
    from tailstudy.spec import CorpusSpec, EvaluateSpec

    out = Path(args.corpus)
    if (out / "world.json").is_file():
        return out, 0.0
    if (out / "shards").exists():
        raise SystemExit(f"{out}: has shards/ but no world.json (half-written?); remove it or pick another dir")
    size = args.image_size or model_image_size
    cfg = CorpusSpec(concepts=args.concepts, open_concepts=0, samples=args.samples, open_samples=0,
                     profile="uniform", min_count=1, image_size=size, seed=args.seed)
    started = time.perf_counter()
    generate(cfg, EvaluateSpec(per_class=1), out)
    return out, time.perf_counter() - started


def reshard(corpus: Path, n: int) -> list[Path]:
    """The corpus's training samples split into n shards (open_clip_train needs at least one shard per data worker),
    in CORPUS/wds-N/00000.tar ... (each with its member index); both loops read these same files."""
    from tailstudy.corpus.shards import ShardWriter, iter_shard

    out = corpus / f"wds-{n}"
    if not out.is_dir():
        samples = [s for path in sorted((corpus / "shards").glob("train-*.tar")) for s in iter_shard(path)]
        tmp = corpus / f".wds-{n}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        per = math.ceil(len(samples) / n)
        for i in range(n):
            with ShardWriter(tmp / f"{i:05d}.tar") as writer:
                for key, members in samples[i * per:(i + 1) * per]:
                    writer.add(key, members)
        os.replace(tmp, out)
    return sorted(out.glob("*.tar"))


def load_corpus(corpus: Path, n_shards: int):
    """The index of every training sample of the corpus (labels: the world's ground-truth target concepts, -1 for
    open-world ones, which only clip trains on; captions: the shards' own), as the train stage streams a subset.

    -> (ShardData, class counts, class names, shard paths, stored image size)."""
    import numpy as np
    import pyarrow.parquet as pq

    from tailstudy.data import ShardData
    from tailstudy.items import locate_items

    world = json.loads((corpus / "world.json").read_text())
    targets = world["targets"]
    names = {c["concept_id"]: c["name"] for c in world["concepts"]}
    captions = pq.read_table(corpus / "captions.parquet", columns=["sample_id", "caption", "shard", "key"]).to_pandas()
    truth = pq.read_table(corpus / "truth.parquet", columns=["sample_id", "concept_id"]).to_pandas()
    concept_of = dict(zip(truth.sample_id, truth.concept_id))
    shards = reshard(corpus, n_shards)
    index_of = {cid: i for i, cid in enumerate(targets)}
    wanted = {k: [(index_of.get(concept_of[s], -1), c)] for s, k, c in zip(captions.sample_id, captions.key,
                                                                           captions.caption)}
    index = locate_items(shards, wanted, corpus, with_captions=True)
    counts = np.bincount(index.label[index.label >= 0], minlength=len(targets)).tolist()
    return ShardData(index), counts, [names[c] for c in targets], shards, world["image_size"]


# ---------------------------------------------------------------- tailstudy's loop

def run_ours(kind: str, data, counts, names, args, device) -> dict:
    from tailstudy.spec import TrainSpec
    from tailstudy.train import train

    cfg = TrainSpec(arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=device.type,
                    workers=args.workers, compile=args.compile, channels_last=args.channels_last)
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
    return {
        "samples_per_epoch": log[-1]["samples"],
        "epoch_seconds": [round(e["seconds"], 4) for e in log],
        "data_wait_frac": [round(e["data_wait_frac"], 4) for e in log],
        "peak_rss_mb": log[-1]["peak_rss_mb"],
        "peak_gpu_mb": log[-1]["peak_gpu_mb"],
        "step_samples_per_s": sum(e["samples"] for e in measured) / sum(e["seconds"] for e in measured),
        "end_to_end_samples_per_s": sum(e["samples"] for e in log) / total,
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


def run_open_clip_train(shards: list[Path], n_samples: int, args, device) -> dict:
    import open_clip_train.main as oct_main
    import torch

    from tailstudy.models.towers import open_clip_config_dir

    for var in ("WORLD_SIZE", "SLURM_NTASKS"):  # never let it initialise torch.distributed
        os.environ.pop(var, None)

    steps_per_epoch = math.ceil(n_samples / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup = min(steps_per_epoch, total_steps // 10 + 1)  # as tailstudy.train.train
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
        model_dir = open_clip_config_dir(args.arch, Path(logs) / "model")  # config only: a fresh, untrained model
        argv = [
            "--train-data", "::".join(str(s) for s in shards),
            "--train-num-samples", str(n_samples),
            "--dataset-type", "webdataset",
            "--model", f"local-dir:{model_dir}",
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
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        captured = io.StringIO()
        try:
            with _quiet_logging(args.verbose) as captured:
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
        "data_wait_frac": [round(e["wait"] / e["seconds"], 4) for e in epochs],
        "step_samples_per_s": sum(e["images"] for e in measured) / sum(e["seconds"] for e in measured),
        "end_to_end_samples_per_s": sum(e["images"] for e in epochs) / total,
        "main_call_seconds": total,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else float("nan"),
        "argv": argv[:],
    }


# ---------------------------------------------------------------- report

LEGEND = """\
end-to-end  the whole call: model build, data pipeline, every epoch incl. warm-up, checkpoints. Both loaders decode,
            augment and tokenise on the fly in --workers processes, from the same shards.
step        the epochs after the warm-up: samples / epoch wall time (waiting for data included).
sl rows     against the open_clip_train CLIP run (it has no supervised mode): a reference, not like for like.
ratio       the median of the per-repetition ratios; repetitions alternate which side runs first. On a CPU shared
            with other processes the figures are noisy: torch's default of one thread per core can slow down
            many-fold while another process holds a core (try --threads 1)."""


def device_label(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'' if n == 1 else 's'})"


def format_table(rows: list[dict]) -> str:
    head = ["learner", "device", "measure", "samples/s (ours)", "samples/s (open_clip_train)",
            "ratio ours/theirs (median)", "per repetition"]
    rate = lambda x: f"{x:.1f}" if x >= 100 else f"{x:.3g}"  # noqa: E731  (a 224 px model on a CPU: ~1 sample/s)
    body = [[r["learner"], r["device"], r["measure"], rate(r["ours"]),
             rate(r["theirs"]) + (" (clip)" if r["learner"] != "clip" else ""), f"{r['ratio']:.2f}",
             " ".join(f"{x:.2f}" for x in r["ratios"])] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--corpus", help="corpus directory to reuse (or to generate into and keep); default: a temp dir")
    p.add_argument("--samples", type=int, default=None,
                   help="training images in a generated corpus (default: 2000; 64 for a model over 64 px on a CPU)")
    p.add_argument("--concepts", type=int, default=20, help="target concepts (classes) in a generated corpus")
    p.add_argument("--image-size", type=int, default=0,
                   help="pixels of a generated corpus (0: the model's input size)")
    p.add_argument("--arch", default="tiny", help="open_clip model config: tailstudy's (tiny) or open_clip's (RN50...)")
    p.add_argument("--learners", default="clip,sl", help="comma-separated tailstudy learners")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--warmup-epochs", type=int, default=1, help="epochs left out of the step figure")
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved repetitions of both sides; the table shows medians (ratio: of the per-rep ratios)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: 256; 16 for a model over 64 px on a CPU (RN50 at 224 px and batch 256 needs "
                        "about 24 GB for its activations alone)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--workers", type=int, default=2, help="data loader worker processes, for both loops")
    p.add_argument("--shards", type=int, default=4, help="shards the corpus is split into (at least --workers)")
    p.add_argument("--compile", action="store_true", help="ours: torch.compile the learner")
    p.add_argument("--channels-last", action="store_true", help="ours: channels-last images and image tower")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads for both loops (0: torch's default, one per core); 1 is steadier on a "
                        "machine whose cores other processes also use")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument("--verbose", action="store_true", help="show open_clip_train's own log")
    args = p.parse_args(argv)
    if args.epochs <= args.warmup_epochs:
        p.error("--epochs must exceed --warmup-epochs (the step figure uses the epochs after the warm-up)")
    return args


def interleaved(args, learners: list[str], ours_fn, theirs_fn) -> tuple[dict, list]:
    """`--repeats` repetitions, alternating which side goes first (ours, theirs | theirs, ours | ...), so a load change
    on a shared machine falls on both sides alike. -> ({learner: [result per repetition]}, [their result per rep])."""
    ours: dict[str, list] = {kind: [] for kind in learners}
    theirs: list = []

    def run_ours_all(rep):
        for kind in learners:
            ours[kind].append(ours_fn(kind))
            print(f"  rep {rep} ours {kind}: epochs {ours[kind][-1]['epoch_seconds']} s, data-wait fraction "
                  f"{ours[kind][-1]['data_wait_frac']}", flush=True)

    def run_theirs(rep):
        theirs.append(theirs_fn())
        print(f"  rep {rep} open_clip_train clip: epochs {theirs[-1]['epoch_seconds']} s, data-wait fraction "
              f"{theirs[-1]['data_wait_frac']}", flush=True)

    for rep in range(args.repeats):
        for side in ((run_ours_all, run_theirs) if rep % 2 == 0 else (run_theirs, run_ours_all)):
            side(rep)
    return ours, theirs


def median_rows(learners: list[str], ours: dict, theirs: list, label: str) -> list[dict]:
    """Per learner and measure: median samples/s of each side and the median of the per-repetition ratios."""
    rows = []
    for kind in learners:
        for measure, key in (("step", "step_samples_per_s"), ("end-to-end", "end_to_end_samples_per_s")):
            pairs = [(o[key], t[key]) for o, t in zip(ours[kind], theirs)]
            ratios = [o / t for o, t in pairs]
            rows.append({"learner": kind, "device": label, "measure": measure, "ours": statistics.median(
                o for o, _ in pairs), "theirs": statistics.median(t for _, t in pairs),
                "ratio": statistics.median(ratios), "ratios": ratios})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from tailstudy.models.towers import image_size_of
    from tailstudy.train import pick_device

    device = pick_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.zeros(1, device=device)  # create the CUDA context before anything is timed
    learners = [k.strip() for k in args.learners.split(",") if k.strip()]
    model_size = image_size_of(args.arch)
    cpu_sized = device.type == "cpu" and model_size > 64  # RN50 / ViT-B-32 on a CPU: a few steps, not a GPU run
    args.samples = args.samples or (64 if cpu_sized else 2000)
    args.batch_size = args.batch_size or (16 if cpu_sized else 256)

    tmp = None
    if not args.corpus:
        tmp = tempfile.mkdtemp(prefix="bench-corpus-")
        args.corpus = str(Path(tmp) / "corpus")
    try:
        corpus, gen_seconds = ensure_corpus(args, model_size)
        data, counts, names, shards, stored_size = load_corpus(corpus, max(args.shards, args.workers, 1))
        n = data.num_samples
        label = device_label(device)
        print(f"corpus {corpus} ({'generated in %.1f s' % gen_seconds if gen_seconds else 'reused'}): {n} images "
              f"in {len(shards)} shard(s), {len(counts)} classes, stored at {stored_size} px", flush=True)
        print(f"model {args.arch} at {model_size} px, batch {args.batch_size}, {args.epochs} epochs "
              f"({args.warmup_epochs} warm-up), lr {args.lr}, device {label}, data workers {args.workers} (both)",
              flush=True)

        ours, theirs = interleaved(args, learners, lambda kind: run_ours(kind, data, counts, names, args, device),
                                   lambda: run_open_clip_train(shards, n, args, device))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = median_rows(learners, ours, theirs, label)
    print()
    print(format_table(rows))
    print()
    print(LEGEND)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "arch": args.arch, "image_size": model_size, "batch_size": args.batch_size, "epochs": args.epochs,
            "warmup_epochs": args.warmup_epochs, "samples": n, "device": label, "workers": args.workers,
            "repeats": args.repeats, "rows": rows, "ours": ours, "open_clip_train": theirs}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
