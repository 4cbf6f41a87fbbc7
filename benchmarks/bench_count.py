"""Ad-hoc phrase counts: the token index's build time and `count` latency, beside a brute-force scan of the same
captions measured in the same run, with the counts checked equal.

    .venv/bin/python benchmarks/bench_count.py                   # 1,000,000 generated web-like captions
    .venv/bin/python benchmarks/bench_count.py --captions 3000000

    .venv/bin/python benchmarks/bench_count.py --captions 10000000 # 10M: generated 1M at a time (seeds 0, 1, ...)

The brute force is the count rule applied to every caption: normalise (vectorised, tailstudy.text), then an Arrow
substring search of " phrase " in " caption ", 1M captions at a time. The latency of a count grows with its words'
posting lists, i.e. with the corpus size; the last column scales the measured CPU time linearly to 10M captions (an
upper bound: the per-query fixed cost does not grow). `tailstudy count` itself is also timed as a subprocess on the
same index (process start included), which is what a user waits for.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_match import generate  # noqa: E402
from tailstudy.index import _normalised, build_index, count  # noqa: E402

PHRASES = ["red fox", "goldfish", "photo of the", "the", "a photo", "golden retriever", "stock photo", "t shirt"]


CHUNK = 1_000_000


def brute(normalised: list[pa.Array], phrase: str) -> int:
    from tailstudy.text import normalise

    found = 0
    for part in normalised:
        padded = pc.binary_join_element_wise(" ", part, " ", "")
        found += int(pc.sum(pc.match_substring(padded, f" {normalise(phrase)} ")).as_py() or 0)
    return found


def captions_of(n: int) -> pa.ChunkedArray:
    """n generated captions, 1M at a time (seed = the million's number), so 10M fit in memory."""
    return pa.chunked_array([generate(min(CHUNK, n - start), "imagenet1k", seed=start // CHUNK)
                             for start in range(0, n, CHUNK)])


def cli_seconds(out: Path, phrase: str) -> tuple[float, float]:
    """`tailstudy count` in a fresh process on an index directory laid out as a workspace's -> (wall, CPU) seconds."""
    import resource
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("tailstudy")), "count", phrase, "-w", str(out.parent.parent),
                    "--examples", "0"], check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.perf_counter() - t0, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    captions = captions_of(args.captions)
    n = len(captions)
    root = Path(tempfile.mkdtemp(prefix="bench-count-"))
    out = root / "index" / "bench"
    out.mkdir(parents=True)
    (out / "manifest.json").write_text('{"corpus": "bench"}')
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        batches = ((pa.array([str(i) for i in range(s, min(s + 65536, n))]), captions.slice(s, 65536).combine_chunks())
                   for s in range(0, n, 65536))
        stats = build_index(batches, out)
        print(f"{n:,} captions ({captions.nbytes / 1e6:.0f} MB): index built in {time.perf_counter() - t0:.1f} s wall, "
              f"{time.process_time() - c0:.1f} s CPU, peak RSS {peak_rss_mb():,.0f} MB; {stats['words']:,} word "
              f"postings, {stats['shards']} shards, {sum(f.stat().st_size for f in out.rglob('*.parquet')) / 1e6:.0f} "
              f"MB on disk; load average {os.getloadavg()[0]:.1f}")
        t0 = time.process_time()
        normalised = [_normalised(chunk) for chunk in captions.chunks]
        normalise_cpu = time.process_time() - t0
        print(f"\n{'phrase':<20}{'count':>10}{'index ms':>10}{'(CPU)':>8}{'CLI ms':>8}{'(CPU)':>7}{'scan ms':>10}"
              f"{'x':>8}  same"
              "  10M est.")
        for phrase in PHRASES:
            best, best_cpu = 1e9, 1e9
            for _ in range(args.repeats):
                w0, c0 = time.perf_counter(), time.process_time()
                found = count(out, phrase, examples=0)
                best, best_cpu = min(best, time.perf_counter() - w0), min(best_cpu, time.process_time() - c0)
            runs = [cli_seconds(out, phrase) for _ in range(args.repeats)]
            cli, cli_cpu = min(r[0] for r in runs), min(r[1] for r in runs)
            s0 = time.process_time()
            expected = brute(normalised, phrase)
            scan = time.process_time() - s0 + normalise_cpu
            print(f"{phrase:<20}{found['count']:>10,}{best * 1000:>10.0f}{best_cpu * 1000:>8.0f}{cli * 1000:>8.0f}"
                  f"{cli_cpu * 1000:>7.0f}"
                  f"{scan * 1000:>10.0f}"
                  f"{scan / best_cpu:>7.0f}x  {'yes' if found['count'] == expected else 'NO'}"
                  f"{best_cpu * 10_000_000 / n:>8.2f} s")
        print("\n(scan = normalising every caption + one substring search, CPU time; index ms = best of "
              f"{args.repeats}, wall and CPU; CLI ms = `tailstudy count` as a subprocess, process start included (wall, "
              "then CPU); "
              f"load average {os.getloadavg()[0]:.1f})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
