"""Run a matcher over caption shards in parallel processes: one ``matches`` Parquet per shard, resumable shard by shard.

Each finished shard leaves ``part-NNNNN.parquet`` and then ``part-NNNNN.json`` (its counts) in a work directory, both
written atomically; a shard counts as done only when its JSON exists, so a killed run redoes at most the shards that
were in flight and never writes a row twice. Same shards in -> byte-identical parts out, whatever the worker count.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from tailstudy.matching import make_matcher, matches_table
from tailstudy.matching.base import Matcher
from tailstudy.matching.inputs import Shard, read_batches
from tailstudy.store import atomic_write_text, write_parquet
from tailstudy.vocab import Vocabulary

Progress = Callable[[int, int | None], None]
# mapper(fn, jobs) -> [fn(job) for job in jobs], run anywhere (e.g. as Prefect tasks mapped over the shards)
Mapper = Callable[[Callable[[Any], dict], list], list]


@dataclass(frozen=True)
class MatcherSpec:
    """What a worker process needs to build the matcher (picklable)."""

    method: str
    vocab: Vocabulary
    options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Matcher:
        return make_matcher(self.method, self.vocab, **self.options)


def part_path(work_dir: Path, index: int) -> Path:
    return work_dir / f"part-{index:05d}.parquet"


def stats_path(work_dir: Path, index: int) -> Path:
    return work_dir / f"part-{index:05d}.json"


def prefetched(items: Iterator[Any]) -> Iterator[Any]:
    """The items of an iterator, the next one read in a thread while the caller works on the current one (Arrow's
    readers release the GIL, so reading and matching overlap)."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def match_shard(shard: Shard, matcher: Matcher, work_dir: Path, progress: Progress | None = None,
                prefetch: bool = True) -> dict:
    """Match one shard -> its part file and counts (written atomically, the counts last). prefetch: read the next
    batch in a thread meanwhile, worth it only where a core would otherwise idle."""
    tables, captions = [], 0
    batches = read_batches(shard)
    for ids, batch in prefetched(batches) if prefetch else batches:
        tables.append(matches_table(ids, batch, matcher))
        captions += len(batch)
        if progress:
            progress(len(batch), None)
    table = pa.concat_tables(tables) if tables else matches_table(pa.array([], pa.string()), [], matcher)
    write_parquet(table, part_path(work_dir, shard.index))
    stats = {"shard": shard.index, "input": shard.label, "captions": captions, "matches": table.num_rows,
             "matched_captions": len(pc.unique(table.column("sample_id")))}
    atomic_write_text(stats_path(work_dir, shard.index), json.dumps(stats, sort_keys=True))
    return stats


def finished(work_dir: Path, shards: list[Shard]) -> dict[int, dict]:
    done = {}
    for shard in shards:
        path = stats_path(work_dir, shard.index)
        if path.is_file() and part_path(work_dir, shard.index).is_file():
            done[shard.index] = json.loads(path.read_text())
    return done


# ---------------------------------------------------------------- worker processes

_worker: tuple[MatcherSpec, Matcher] | None = None
_worker_prefetch = True


def _matcher_for(spec: MatcherSpec) -> Matcher:
    global _worker
    if _worker is None or _worker[0] != spec:
        _worker = (spec, spec.build())
    return _worker[1]


def _init_worker(spec: MatcherSpec, prefetch: bool) -> None:
    global _worker_prefetch
    _worker_prefetch = prefetch
    pa.set_cpu_count(1)  # one core per worker: the pool is the parallelism
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    _matcher_for(spec)


def _run_in_pool(shard: Shard, work_dir: Path) -> dict:
    """A pool worker's job: its matcher was built (or inherited) when the worker started."""
    return match_shard(shard, _worker[1], work_dir, prefetch=_worker_prefetch)


def run_shard(job: tuple[Shard, MatcherSpec, Path]) -> dict:
    """One shard, in whatever process runs it (a pool worker, a Prefect task, a Dask worker)."""
    shard, spec, work_dir = job
    return match_shard(shard, _matcher_for(spec), work_dir)


def _context(spec: MatcherSpec) -> multiprocessing.context.BaseContext:
    """fork (workers inherit the built matcher, no start-up cost) when that is safe: Linux, one thread, no torch in the
    workers; otherwise forkserver (POSIX) or spawn."""
    if sys.platform == "linux" and threading.active_count() == 1 and spec.method != "semantic":
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn" if sys.platform == "win32" else "forkserver")


# What runs after matching in the same process (the frequency stage's figure, the catalog refresh) imports these; the
# parent only waits while its workers match, so it imports them then, in a thread started after the workers forked.
NEXT_STAGE_MODULES = ("matplotlib.pyplot", "duckdb")


def _import_quietly(names: tuple[str, ...]) -> None:
    import importlib

    for name in names:
        try:
            if name == "matplotlib.pyplot":
                importlib.import_module("matplotlib").use("Agg")
            importlib.import_module(name)
        except Exception:  # pragma: no cover - a missing optional module is imported (and reported) where it is used
            pass


def warm_up_next_stages() -> None:
    threading.Thread(target=_import_quietly, args=(NEXT_STAGE_MODULES,), daemon=True, name="warm-imports").start()


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_shards(shards: list[Shard], spec: MatcherSpec, work_dir: Path, workers: int | None = None,
               progress: Progress | None = None, mapper: Mapper | None = None) -> list[dict]:
    """Match every shard not finished yet -> counts per shard, in shard order. Runs the pending shards through
    `mapper` when given, else in `workers` processes (default: one per core; 1 = in this process)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    done = finished(work_dir, shards)
    pending = [s for s in shards if s.index not in done]
    total = sum(s.rows for s in shards) if all(s.rows is not None for s in shards) else None
    if progress:
        progress(sum(done[i]["captions"] for i in done), total)
    workers = max(1, min(workers or default_workers(), len(pending)))
    if mapper is not None and pending:
        for stats in mapper(run_shard, [(shard, spec, work_dir) for shard in pending]):
            done[stats["shard"]] = stats
            if progress:
                progress(stats["captions"], total)
    elif workers == 1:
        matcher = _matcher_for(spec)
        for shard in pending:
            done[shard.index] = match_shard(shard, matcher, work_dir, (lambda n, _t: progress(n, total))
                                            if progress else None, prefetch=default_workers() > 1)
    elif pending:
        _matcher_for(spec)  # built once here: forked workers inherit it
        # a reader thread per worker only pays where cores outnumber workers (one per core: 10-15% slower)
        with ProcessPoolExecutor(workers, mp_context=_context(spec), initializer=_init_worker,
                                 initargs=(spec, workers < default_workers())) as pool:
            futures = {pool.submit(_run_in_pool, shard, work_dir) for shard in pending}
            warm_up_next_stages()  # the workers exist now (fork starts them all at the first submit)
            try:
                while futures:
                    finished_now, futures = wait(futures, return_when=FIRST_COMPLETED)
                    for future in finished_now:
                        stats = future.result()
                        done[stats["shard"]] = stats
                        if progress:
                            progress(stats["captions"], total)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return [done[s.index] for s in shards]
