"""Matching throughput, each figure beside a baseline measured in the same run: the phrase matcher, the bare
ahocorasick_rs search it runs, the bag matcher, each against the naive per-class loop; then `tailstudy match` end to
end on 2 cores.

    .venv/bin/python benchmarks/bench_match.py                      # 1,000,000 generated web-like captions
    .venv/bin/python benchmarks/bench_match.py --input caps.parquet --caption-col TEXT

Generated captions are deterministic (seed) and shaped like web alt-text: 4-16 words, 60 characters on average, a
third naming an ImageNet class (some capitalised, plural, possessive or hyphenated), and some HTML entities,
apostrophes, accents, CJK and emoji. The naive loops are pipeline/matching/reference.py: for each caption, for each
concept, test the rule (the bag one is the paper's counting loop); each matcher's matches on their captions must be
theirs. Rates are best-of-N wall-clock runs; the CPU-time rate beside them is what one process gets when the machine
is shared. MB/s counts the captions' UTF-8 bytes.

The phrase row is the whole matcher (tailstudy.text.normalised, the search, the concept tables); the rows under it
split it: `normalised` alone, and ahocorasick_rs's overlapping search alone on the text already normalised (what the
library costs, with none of ours). `tailstudy match` then runs in a fresh process pinned to 2 cores (2 workers;
start-up, vocabulary, matching, frequency and catalog included), wall and CPU time, against the naive loop.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tailstudy.matching import make_matcher  # noqa: E402
from tailstudy.matching.reference import NAIVE  # noqa: E402
from tailstudy.text import EMPTY, NEWLINE, SPACE, normalised  # noqa: E402
from tailstudy.vocab import load_vocab  # noqa: E402
from timing import best_of  # noqa: E402

FLOOR = 300_000  # captions/s of `tailstudy match` end to end on 2 cores (issue 24)

WORDS = ("photo of the a in on with for and my new best free stock image vintage red blue green black white large "
         "small old beautiful house garden street city beach sunset summer winter day night man woman girl boy family "
         "wedding party food design art poster logo print dress shoes sale online shop buy cheap high quality hd "
         "wallpaper background illustration vector icon set collection pattern texture model 3d view home kitchen "
         "room table chair lamp light wood metal glass gold silver pink purple orange yellow brown grey modern classic "
         "retro style fashion women men kids baby cute funny happy love christmas birthday gift card cover book music "
         "video game travel hotel resort mountain lake river sea sky cloud flower tree leaf park road car bike").split()
EXTRAS = ["café", "crème brûlée", "naïve", "日本語", "東京", "🐟", "❤️", "😀", "—", "Ü", "ß", "ñ"]
ENTITIES = ["&amp;", "&quot;", "&#39;", "&nbsp;", "&lt;b&gt;"]


def generate(n: int, vocab_name: str, seed: int = 0) -> pa.Array:
    rng = np.random.default_rng(seed)
    synonyms = np.array([s for c in load_vocab(vocab_name).concepts for s in c.synonyms], object)
    pseudo = np.array(["".join(w) for w in rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=(20000, 7))], object)
    words = np.array(WORDS, object)
    lengths = rng.integers(4, 16, n)
    total = int(lengths.sum())
    # 70% common words, 30% from a long-tailed list of rare ones (brand names, typos, ...)
    pool = np.where(rng.random(total) < 0.7, words[rng.integers(len(words), size=total)],
                    pseudo[rng.integers(len(pseudo), size=total)])
    named = rng.random(n) < 0.33
    names = synonyms[rng.integers(len(synonyms), size=n)]
    style, where, extra, cap, end = rng.random(n), rng.random(n), rng.random(n), rng.random(n), rng.integers(5, size=n)
    extras = rng.integers(len(EXTRAS), size=n)
    entities = rng.integers(len(ENTITIES), size=n)
    out = []
    offset = 0
    for i in range(n):
        caption = list(pool[offset:offset + lengths[i]])
        offset += lengths[i]
        if named[i]:
            name, r = names[i], style[i]
            name = name.title() if r < 0.25 else name + "s" if r < 0.4 else name + "'s" if r < 0.5 else \
                name.replace(" ", "-") if r < 0.55 else name
            caption.insert(int(where[i] * (len(caption) + 1)), name)
        text = " ".join(caption)
        if extra[i] < 0.10:
            text += " " + EXTRAS[extras[i]]
        elif extra[i] < 0.13:
            text = text.replace(" ", f" {ENTITIES[entities[i]]} ", 1) + " &amp; more"
        elif extra[i] < 0.25:
            text = text.replace(" ", "'s ", 1)
        if cap[i] < 0.4:
            text = text[:1].upper() + text[1:] + (".", "!", " |", " - Stock Photo", "")[end[i]]
        out.append(text)
    return pa.array(out, pa.string())


def rate(fn, n: int, repeats: int) -> tuple[float, float]:
    """(best wall captions/s, best CPU captions/s) of fn() over `repeats` runs."""
    wall, cpu = best_of(repeats, fn)
    return n / wall, n / max(cpu, 1e-9)


def batches(captions: pa.Array, size: int = 65536) -> list[pa.Array]:
    return [captions.slice(start, size) for start in range(0, len(captions), size)]


def per_caption(n: int, rows: np.ndarray, ids: np.ndarray) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(n)]
    for r, i in zip(rows.tolist(), ids.tolist()):
        out[r].append(i)
    return out


def bench_matchers(args, vocab, captions: pa.Array, results: dict) -> list[tuple]:
    """(label, captions/s, CPU captions/s, MB/s, x naive, matches, same as naive) rows."""
    n, mb, parts = len(captions), captions.nbytes / 1e6, batches(captions)
    sample = captions.slice(0, args.naive).to_pylist()
    rows = []
    for method in ("phrase", "bag"):
        matcher = make_matcher(method, vocab)
        matcher.match(captions.slice(0, 1000))  # warm-up
        found = []
        wall, cpu = rate(lambda: found.append(sum(len(matcher.match(p)[0]) for p in parts)), n, args.repeats)
        naive = NAIVE[method](vocab)
        naive_wall, naive_cpu = rate(lambda: [naive.match_one(c) for c in sample], len(sample), 1)
        same = per_caption(len(sample), *matcher.match(sample)[:2]) == [naive.match_one(c) for c in sample]
        results["matchers"][method] = {"captions_per_s": wall, "cpu_captions_per_s": cpu, "mb_per_s": wall * mb / n,
                                       "matches": found[-1], "naive_captions_per_s": naive_wall,
                                       "naive_cpu_captions_per_s": naive_cpu, "vs_naive": wall / naive_wall,
                                       "cpu_vs_naive": cpu / naive_cpu, "same_as_naive": same}
        rows.append((method, wall, cpu, wall * mb / n, wall / naive_wall, found[-1], same))
        if method == "phrase":
            rows += phrase_parts(args, matcher, parts, n, mb, naive_wall, results)
        rows.append((f"  naive {method} loop", naive_wall, naive_cpu, naive_wall * mb / n, 1.0, None, None))
    return rows


def phrase_parts(args, matcher, parts: list[pa.Array], n: int, mb: float, naive_wall: float,
                 results: dict) -> list[tuple]:
    """The phrase matcher's normalisation alone, and ahocorasick_rs's search alone on the normalised text."""
    wall, cpu = rate(lambda: [normalised(p) for p in parts], n, args.repeats)
    rows = [("  normalised() alone", wall, cpu, wall * mb / n, wall / naive_wall, None, None)]
    results["matchers"]["phrase_normalised_only"] = {"captions_per_s": wall, "cpu_captions_per_s": cpu}
    texts = [pc.binary_join_element_wise(EMPTY, normalised(p), NEWLINE, SPACE) for p in parts]
    buffers = [np.frombuffer(t.buffers()[2], np.uint8)[: np.frombuffer(t.buffers()[1], np.int32)[len(t)]]
               for t in texts]
    found = []
    wall, cpu = rate(lambda: found.append(sum(len(matcher.automaton.find_matches_as_indexes(b, overlapping=True))
                                              for b in buffers)), n, args.repeats)
    rows.append(("  ahocorasick_rs alone", wall, cpu, wall * mb / n, wall / naive_wall, found[-1], None))
    results["matchers"]["phrase_search_only"] = {"captions_per_s": wall, "cpu_captions_per_s": cpu,
                                                 "pattern_hits": found[-1]}
    return rows


def print_matchers(rows: list[tuple]) -> None:
    print(f"\n{'':<24}{'captions/s':>12}{'(CPU time)':>12}{'MB/s':>8}{'x naive':>10}{'matches':>11}  same as naive")
    for label, wall, cpu, mbs, ratio, found, same in rows:
        shown = f"{found:>11,}" if found is not None else f"{'':>11}"
        agree = "" if same is None else "yes" if same else "NO"
        print(f"{label:<24}{wall:>12,.0f}{cpu:>12,.0f}{mbs:>8,.1f}{ratio:>9,.0f}x{shown}  {agree}")


def end_to_end(path: Path, vocab: str, work: Path, method: str) -> tuple[float, float]:
    """`tailstudy match` in a fresh process and workspace, on 2 workers pinned to 2 cores -> (wall s, CPU s of it
    and its worker processes)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)  # -w names an existing workspace
    cores = sorted(os.sched_getaffinity(0))[:2] if hasattr(os, "sched_getaffinity") else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    command = [str(Path(sys.executable).with_name("tailstudy")), "match", str(path), "--vocab", vocab, "-j", "2",
               "-w", str(work), "--method", method]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "OMP_NUM_THREADS": "1"},
                   preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_end_to_end(args, vocab, captions: pa.Array, results: dict) -> None:
    n, mb = len(captions), captions.nbytes / 1e6
    with tempfile.TemporaryDirectory(prefix="bench-match-") as tmp:
        path = Path(tmp) / "captions.parquet"
        pq.write_table(pa.table({"caption": captions}), path, row_group_size=max(1, n // 8))
        for method in ("phrase", "bag"):
            load = os.getloadavg()[0]
            runs = [end_to_end(path, vocab.name, Path(tmp) / "ws", method) for _ in range(args.repeats)]
            wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
            naive = results["matchers"][method]["naive_captions_per_s"]
            results[f"end_to_end_{method}"] = {"captions": n, "wall_s": wall, "cpu_s": cpu, "captions_per_s": n / wall,
                                               "mb_per_s": mb / wall, "vs_naive": n / wall / naive,
                                               "captions_per_cpu_s": n / cpu, "load_average_before": load}
            print(f"\ntailstudy match --method {method} end to end ({n:,} captions, Parquet in, 2 workers on 2 cores, "
                  f"process start included): {wall:.2f} s wall = {n / wall:,.0f} captions/s, {mb / wall:.1f} MB/s, "
                  f"{n / wall / naive:,.0f}x the naive {method} loop; {cpu:.2f} s CPU in all processes = "
                  f"{n / cpu:,.0f} captions per CPU-second (best of {args.repeats}; load average {load:.1f} before)")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", type=int, default=1_000_000, help="captions to generate (default 1,000,000)")
    ap.add_argument("--input", type=Path, help="read captions from this Parquet file instead")
    ap.add_argument("--caption-col", default="caption")
    ap.add_argument("--vocab", default="imagenet1k")
    ap.add_argument("--naive", type=int, default=3000, help="captions for the naive loops (default 3,000)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)

    vocab = load_vocab(args.vocab)
    t0 = time.perf_counter()
    captions = (pq.read_table(args.input, columns=[args.caption_col]).column(0).combine_chunks().cast(pa.string())
                if args.input else generate(args.captions, args.vocab))
    n = len(captions)
    print(f"{n:,} captions ({'read' if args.input else 'generated'} in {time.perf_counter() - t0:.1f} s, "
          f"{captions.nbytes / 1e6:.1f} MB, "
          f"{np.mean(pc.utf8_length(captions).to_numpy(zero_copy_only=False)):.0f} characters on average), "
          f"vocabulary {vocab.name} ({len(vocab)} concepts)")
    results: dict = {"captions": n, "mb": captions.nbytes / 1e6, "vocab": vocab.name, "matchers": {}}
    print_matchers(bench_matchers(args, vocab, captions, results))
    bench_end_to_end(args, vocab, captions, results)

    phrase, bag, e2e = results["matchers"]["phrase"], results["matchers"]["bag"], results["end_to_end_phrase"]
    checks = [(f"tailstudy match end to end >= {FLOOR:,} captions/s (wall, 2 cores)", e2e["captions_per_s"] >= FLOOR),
              ("phrase: the naive loop's matches on its captions", phrase["same_as_naive"]),
              ("bag: the naive loop's matches on its captions", bag["same_as_naive"])]
    print("\n" + "\n".join(f"  {'PASS' if ok else 'FAIL'}  {what}" for what, ok in checks))
    results["checks"] = dict(checks)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
