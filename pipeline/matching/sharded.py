"""Run a matcher over caption shards in parallel processes: one ``matches`` Parquet per shard, resumable shard by shard.

Each finished shard leaves ``part-NNNNN.parquet`` and then ``part-NNNNN.json`` (its counts) in a work directory, both
written atomically; a shard counts as done only when its JSON exists, so a killed run redoes at most the shards that
were in flight and never writes a row twice. Same shards in -> byte-identical parts out, whatever the worker count.
"""
from __future__ import annotations

import json
import multiprocessing
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.compute as pc

from tailstudy.env import usable_cores
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


def match_shard(shard: Shard, matcher: Matcher, work_dir: Path, progress: Progress | None = None) -> dict:
    """Match one shard -> its part file and counts (written atomically, the counts last)."""
    tables, captions = [], 0
    for ids, batch in read_batches(shard):
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


def _matcher_for(spec: MatcherSpec) -> Matcher:
    """The matcher of `spec`, built once per process."""
    global _worker
    if _worker is None or _worker[0] != spec:
        _worker = (spec, spec.build())
    return _worker[1]


def _init_worker() -> None:
    pa.set_cpu_count(1)  # one core per worker: the pool is the parallelism
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def run_shard(job: tuple[Shard, MatcherSpec, Path]) -> dict:
    """One shard, in whatever process runs it (a pool worker, a Prefect task, a Dask worker)."""
    shard, spec, work_dir = job
    return match_shard(shard, _matcher_for(spec), work_dir)


def _context(spec: MatcherSpec) -> multiprocessing.context.BaseContext:
    """fork (no interpreter start-up per worker) when that is safe: Linux, one thread, no torch in the workers;
    otherwise forkserver (POSIX) or spawn."""
    if sys.platform == "linux" and threading.active_count() == 1 and spec.method != "semantic":
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn" if sys.platform == "win32" else "forkserver")


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
    workers = max(1, min(workers or usable_cores(), len(pending)))
    if mapper is not None and pending:
        for stats in mapper(run_shard, [(shard, spec, work_dir) for shard in pending]):
            done[stats["shard"]] = stats
            if progress:
                progress(stats["captions"], total)
    elif workers == 1:
        matcher = _matcher_for(spec)
        for shard in pending:
            done[shard.index] = match_shard(shard, matcher, work_dir, (lambda n, _t: progress(n, total))
                                            if progress else None)
    elif pending:
        with ProcessPoolExecutor(workers, mp_context=_context(spec), initializer=_init_worker) as pool:
            futures = {pool.submit(run_shard, (shard, spec, work_dir)) for shard in pending}
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
