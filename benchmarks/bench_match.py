"""Matching throughput: each matcher's captions/s beside the naive per-class loop, measured in the same run, and the
sharded match stage on one core against two.

    .venv/bin/python benchmarks/bench_match.py                      # 1,000,000 generated web-like captions
    .venv/bin/python benchmarks/bench_match.py --input caps.parquet --caption-col TEXT
    .venv/bin/python benchmarks/bench_match.py --semantic 2000      # also time the semantic filter (loads a model)

Generated captions are deterministic (seed) and shaped like web alt-text: 4-16 words, 60 characters on average, a
third naming an ImageNet class (some capitalised, plural, possessive or hyphenated), and some HTML entities,
apostrophes, accents, CJK and emoji. The naive loops are pipeline/matching/reference.py: for each caption, for each
concept, test the rule (the bag one is the paper's counting loop). Rates are best-of-N wall-clock runs; the CPU-time
rate beside them is what one process gets when the machine is shared. MB/s counts the captions' UTF-8 bytes.

The phrase row is the compiled core (pipeline/_core.c) where the C extension is built; the "numpy path" row under it
is the same rule on the vectorised numpy path the package falls back to without a C compiler, checked to give the same
matches. The phrase rule is also run with its pattern search done by multi-pattern libraries (ahocorasick_rs, a Rust
Aho-Corasick binding, and pyahocorasick; benchmarks/match_libraries.py) on the same normalised text, checked to give
the same matches. `tailstudy match` is then timed end to end in a fresh process (2 workers, start-up, vocabulary,
matching, frequency and catalog included), wall and CPU time, against the naive phrase loop measured in this run.
Both libraries are in deploy/requirements.lock, so a fresh setup runs the comparison. Last, the sharded stage runs
its shards on one core and on two, the process pinned to them (sched_setaffinity): unpinned, a single worker's reader
thread would use the second core.
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
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tailstudy.matching import make_matcher  # noqa: E402
from tailstudy.matching.inputs import plan_shards, resolve_sources  # noqa: E402
from tailstudy.matching.reference import NAIVE  # noqa: E402
from tailstudy.matching.sharded import MatcherSpec, run_shards  # noqa: E402
from timing import best_of  # noqa: E402
from tailstudy.vocab import load_vocab  # noqa: E402

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


def match_all(matcher, captions: pa.Array, batch: int = 65536) -> int:
    found = 0
    for start in range(0, len(captions), batch):
        found += len(matcher.match(captions.slice(start, batch))[0])
    return found


def same_matches(a, b, captions: pa.Array, batch: int = 65536) -> bool:
    for start in range(0, len(captions), batch):
        part = captions.slice(start, batch)
        if not all(np.array_equal(x, y) for x, y in zip(a.match(part), b.match(part))):
            return False
    return True


def sharded_seconds(path: Path, vocab, workers: int, work: Path) -> float:
    """The match stage's shards on `workers` cores: the process (and the workers it forks) pinned to that many cores,
    since one worker alone runs in this process with a reader thread that would use a second core."""
    sources = resolve_sources(path)
    shards = plan_shards(sources)
    shutil.rmtree(work, ignore_errors=True)
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if allowed is not None:
        os.sched_setaffinity(0, sorted(allowed)[:workers])
    try:
        t0 = time.perf_counter()
        run_shards(shards, MatcherSpec("phrase", vocab), work, workers=workers)
        return time.perf_counter() - t0
    finally:
        if allowed is not None:
            os.sched_setaffinity(0, allowed)


def end_to_end(path: Path, vocab: str, workers: int, work: Path, method: str = "phrase") -> tuple[float, float]:
    """`tailstudy match` in a fresh process and workspace -> (wall s, CPU s of it and its worker processes)."""
    shutil.rmtree(work, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    command = [str(Path(sys.executable).with_name("tailstudy")), "match", str(path), "--vocab", vocab, "-j",
               str(workers), "-w", str(work), "--method", method]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_matchers(args, vocab, captions: pa.Array, results: dict) -> list[tuple]:
    n, mb = len(captions), captions.nbytes / 1e6
    sample = captions.slice(0, args.naive).to_pylist()
    rows = []
    for method in ("phrase", "bag"):
        matcher = make_matcher(method, vocab)
        matcher.match(captions.slice(0, 1000))  # warm-up
        found = []
        wall, cpu = rate(lambda: found.append(match_all(matcher, captions)), n, args.repeats)
        naive = NAIVE[method](vocab)
        expected = [naive.match_one(c) for c in sample[:200]]
        naive_wall, naive_cpu = rate(lambda: [naive.match_one(c) for c in sample], len(sample), 1)
        got_rows, got_ids, _ = matcher.match(sample[:200])
        got = [[] for _ in range(200)]
        for r, i in zip(got_rows.tolist(), got_ids.tolist()):
            got[r].append(i)
        agree = got == expected[:len(got)]
        results["matchers"][method] = {"captions_per_s": wall, "cpu_captions_per_s": cpu, "mb_per_s": wall * mb / n,
                                       "cpu_mb_per_s": cpu * mb / n, "matches": found[-1],
                                       "naive_captions_per_s": naive_wall, "naive_cpu_captions_per_s": naive_cpu,
                                       "speedup": wall / naive_wall, "cpu_speedup": cpu / naive_cpu,
                                       "agrees_with_naive": agree}
        label = f"{method} (compiled)" if method == "phrase" and matcher.trie.compiled else method
        results["matchers"][method]["compiled"] = label != method
        rows.append((label, wall, cpu, wall * mb / n, naive_wall, wall / naive_wall, found[-1], agree))
        if method == "phrase":
            rows += bench_numpy_core(args, vocab, matcher, captions, results, naive_wall)
            rows += bench_libraries(args, matcher, captions, results, naive_wall)
    return rows


def bench_numpy_core(args, vocab, phrase, captions: pa.Array, results: dict, naive_wall: float) -> list[tuple]:
    """The phrase rule on its numpy path (what runs where the C extension is not built), beside the compiled core."""
    from tailstudy.matching.phrase import PhraseMatcher

    if not phrase.trie.compiled:
        return []  # the phrase row above is the numpy path already
    n, mb = len(captions), captions.nbytes / 1e6
    matcher = PhraseMatcher(vocab, compiled=False)
    found = []
    wall, cpu = rate(lambda: found.append(match_all(matcher, captions)), n, args.repeats)
    same = same_matches(phrase, matcher, captions)
    results["matchers"]["phrase_numpy_path"] = {"captions_per_s": wall, "cpu_captions_per_s": cpu,
                                           "mb_per_s": wall * mb / n, "same_as_phrase": same}
    return [("  numpy path", wall, cpu, wall * mb / n, naive_wall, wall / naive_wall, found[-1], same)]


def bench_libraries(args, phrase, captions: pa.Array, results: dict, naive_wall: float) -> list[tuple]:
    """The phrase rule with its pattern search done by multi-pattern libraries (benchmarks/match_libraries.py)."""
    from match_libraries import LibraryPhrase

    n, mb, rows = len(captions), captions.nbytes / 1e6, []
    for library in ("ahocorasick_rs", "pyahocorasick"):
        try:
            matcher = LibraryPhrase(phrase, library)
        except ImportError:
            continue
        found = []
        wall, cpu = rate(lambda: found.append(match_all(matcher, captions)), n, args.repeats)
        same = same_matches(phrase, matcher, captions.slice(0, min(n, 200_000)))
        results["matchers"][f"phrase/{library}"] = {"captions_per_s": wall, "cpu_captions_per_s": cpu,
                                                    "mb_per_s": wall * mb / n, "same_as_phrase": same}
        rows.append((f"  {library}", wall, cpu, wall * mb / n, naive_wall, wall / naive_wall, found[-1], same))
    return rows


def print_matchers(rows: list[tuple]) -> None:
    print(f"\n{'matcher':<20}{'captions/s':>12}{'(CPU time)':>12}{'MB/s':>8}{'naive loop/s':>14}{'speed-up':>10}"
          f"{'matches':>10}  same as naive (indented rows: same as phrase)")
    for method, wall, cpu, mbs, naive_wall, speedup, found, agree in rows:
        if method == "semantic":  # no naive loop: its rule is the phrase rule plus one embedding per candidate
            print(f"{method:<20}{wall:>12,.0f}{cpu:>12,.0f}{mbs:>8,.1f}{'-':>14}{'-':>10}{'-':>10}  -")
            continue
        print(f"{method:<20}{wall:>12,.0f}{cpu:>12,.0f}{mbs:>8,.1f}{naive_wall:>14,.0f}{speedup:>9,.0f}x{found:>10,}  "
              f"{'yes' if agree else 'NO'}")


def end_to_end_figures(args, path: Path, vocab, method: str, results: dict, mb: float, n: int, load: float,
                       work: Path) -> dict:
    """Best of --repeats runs of `tailstudy match --method METHOD` on 2 workers, against METHOD's naive loop."""
    runs = [end_to_end(path, vocab.name, 2, work, method) for _ in range(args.repeats)]
    wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
    naive = results["matchers"][method]["naive_captions_per_s"]
    naive_cpu = results["matchers"][method]["naive_cpu_captions_per_s"]
    print(f"\ntailstudy match --method {method} end to end ({n:,} captions, Parquet in, 2 workers, process start "
          f"included): {wall:.2f} s wall = {n / wall:,.0f} captions/s, {mb / wall:.1f} MB/s, {n / wall / naive:,.0f}x "
          f"the naive {method} loop (wall); {cpu:.2f} s CPU in all processes = {n / cpu:,.0f} captions per CPU-second, "
          f"{n / cpu / naive_cpu:,.0f}x the naive loop's {naive_cpu:,.0f} per CPU-second; two idle cores could at best "
          f"give {2 * n / cpu:,.0f} captions/s (best of {args.repeats}; load average {load:.1f} before)")
    return {"method": method, "captions": n, "workers": 2, "wall_s": wall, "cpu_s": cpu, "captions_per_s": n / wall,
            "mb_per_s": mb / wall, "vs_naive": n / wall / naive, "captions_per_cpu_s": n / cpu,
            "vs_naive_cpu": n / cpu / naive_cpu, "two_free_cores_bound": 2 * n / cpu, "load_average_before": load}


def bench_stage(args, vocab, captions: pa.Array, results: dict) -> None:
    """`tailstudy match` end to end (process start included) on 2 workers, and the sharded stage on 1 vs 2 cores."""
    n = len(captions)
    with tempfile.TemporaryDirectory(prefix="bench-match-") as tmp:
        path = Path(tmp) / "captions.parquet"
        pq.write_table(pa.table({"caption": captions}), path, row_group_size=max(1, n // 8))
        load = os.getloadavg()[0]
        # each rule end to end against its own naive loop (bag's is the paper's counting loop)
        for method, key in (("phrase", "end_to_end"), ("bag", "end_to_end_bag")):
            results[key] = end_to_end_figures(args, path, vocab, method, results, captions.nbytes / 1e6, n, load,
                                              Path(tmp) / "e2e")
        if args.no_sharded:
            return
        shards = len(plan_shards(resolve_sources(path)))
        one = min(sharded_seconds(path, vocab, 1, Path(tmp) / "w1") for _ in range(args.repeats))
        two = min(sharded_seconds(path, vocab, 2, Path(tmp) / "w2") for _ in range(args.repeats))
    results["sharded"] = {"shards": shards, "one_core_s": one, "two_cores_s": two, "ratio": one / two,
                          "load_average_before": load}
    print(f"sharded match stage (phrase, {shards} shards, Parquet in, part files out; the process pinned to the "
          f"cores): 1 core {one:.2f} s, 2 cores {two:.2f} s -> {one / two:.2f}x (best of {args.repeats}; other "
          "processes on these cores take from the 2-core figure)")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", type=int, default=1_000_000, help="captions to generate (default 1,000,000)")
    ap.add_argument("--input", type=Path, help="read captions from this Parquet file instead")
    ap.add_argument("--caption-col", default="caption")
    ap.add_argument("--vocab", default="imagenet1k")
    ap.add_argument("--naive", type=int, default=3000, help="captions for the naive loops (default 3,000)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--semantic", type=int, default=0, help="also time the semantic matcher on this many captions")
    ap.add_argument("--no-sharded", action="store_true", help="skip the 1-core vs 2-core sharded stage")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)

    vocab = load_vocab(args.vocab)
    t0 = time.perf_counter()
    captions = (pq.read_table(args.input, columns=[args.caption_col]).column(0).combine_chunks().cast(pa.string())
                if args.input else generate(args.captions, args.vocab))
    n = len(captions)
    print(f"{n:,} captions ({'read' if args.input else 'generated'} in {time.perf_counter() - t0:.1f} s, "
          f"{captions.nbytes / 1e6:.1f} MB, "
          f"{np.mean(pa.compute.utf8_length(captions).to_numpy(zero_copy_only=False)):.0f} characters on average), "
          f"vocabulary {vocab.name} ({len(vocab)} concepts)")
    results: dict = {"captions": n, "mb": captions.nbytes / 1e6, "vocab": vocab.name, "matchers": {}}
    rows = bench_matchers(args, vocab, captions, results)
    if args.semantic:
        matcher = make_matcher("semantic", vocab)
        part = captions.slice(0, args.semantic)
        matcher.match(part.slice(0, 50))  # loads the model
        wall, cpu = rate(lambda: matcher.match(part), len(part), 1)
        results["matchers"]["semantic"] = {"captions_per_s": wall, "cpu_captions_per_s": cpu}
        rows.append(("semantic", wall, cpu, wall * part.nbytes / 1e6 / len(part), float("nan"), float("nan"), -1,
                     True))
    print_matchers(rows)
    bench_stage(args, vocab, captions, results)

    phrase, bag, e2e = results["matchers"]["phrase"], results["matchers"]["bag"], results["end_to_end"]
    e2e_bag = results["end_to_end_bag"]
    checks = [("phrase core >= 1,000,000 captions/s (wall)", phrase["captions_per_s"] >= 1_000_000),
              ("phrase core >= 1,000,000 captions/s (CPU time)", phrase["cpu_captions_per_s"] >= 1_000_000),
              ("bag >= 50x its naive loop", bag["speedup"] >= 50),
              ("tailstudy match end to end >= 300,000 captions/s (wall, 2 workers)", e2e["captions_per_s"] >= 300_000),
              ("tailstudy match end to end >= 500x the naive phrase loop (wall)", e2e["vs_naive"] >= 500),
              ("tailstudy match end to end >= 500x the naive phrase loop (CPU time)", e2e["vs_naive_cpu"] >= 500),
              ("tailstudy match --method bag end to end >= 500x the naive bag loop (wall)", e2e_bag["vs_naive"] >= 500)]
    if "phrase_numpy_path" in results["matchers"]:
        checks.append(("phrase: the compiled core faster than the numpy path (CPU time)",
                       phrase["cpu_captions_per_s"] > results["matchers"]["phrase_numpy_path"]["cpu_captions_per_s"]))
    for name, lib in results["matchers"].items():
        if name.startswith("phrase/"):
            checks.append((f"phrase faster than {name[7:]} (CPU time)",
                           phrase["cpu_captions_per_s"] > lib["cpu_captions_per_s"]))
    if "sharded" in results:
        checks.append(("2 cores >= 1.6x one core", results["sharded"]["ratio"] >= 1.6))
    print("\n" + "\n".join(f"  {'PASS' if ok else 'FAIL'}  {what}" for what, ok in checks))
    results["checks"] = dict(checks)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
