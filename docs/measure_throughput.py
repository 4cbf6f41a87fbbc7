"""Measure what docs/scaling.md extrapolates from: the phrase matcher's captions/s per process, one match shard end to
end (Parquet in -> matches Parquet out), and the per-task overhead of Prefect task mapping on a local Dask cluster.

    .venv/bin/python docs/measure_throughput.py [--captions 400000] [--shard 200000] [--dask-tasks 64]
                                                [--semantic 2000 [--semantic-device cuda]]

Captions are web-like: the synthetic world's title, tags and description fields recombined at random (title. tags.
description, about 70 characters on average, near-all distinct). The Dask part needs a Prefect API: it runs against
PREFECT_API_URL when set, else it is skipped. Prints one JSON object; nothing is written outside a temp directory.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import sys

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from timing import best_of  # noqa: E402  (the benchmarks' timing helper)


def world_captions(tmp: Path, count: int) -> list[str]:
    """`count` web-like captions: the default synthetic world's title / tags / description fields, recombined at
    random across its 24k samples so that (almost) every caption is distinct, as on the web."""
    import numpy as np
    import pyarrow.parquet as pq
    import yaml

    from tailstudy import stages as S
    from tailstudy.spec import default_spec_path, parse_spec
    from tailstudy.store import Workspace

    data = yaml.safe_load(default_spec_path().read_text())
    data["corpus"]["image_size"] = 16  # the captions do not depend on the image size; rendering gets cheaper
    plan = S.plan_study(parse_spec(data, "measure"))
    ws = Workspace(tmp / "ws")
    corpus = S.run_local(ws, [plan.node("corpus")])["corpus"]
    fields = pq.read_table(corpus.path / "captions.parquet",
                           columns=["title", "tags", "description"]).to_pydict()
    rng = np.random.default_rng(0)
    n = len(fields["title"])
    picks = rng.integers(0, n, size=(count, 3))
    parts = [fields["title"], fields["tags"], fields["description"]]
    return [". ".join(p for p in (parts[0][a], parts[1][b], parts[2][c]) if p) for a, b, c in picks]


def shard_pass(shard: Path, out: Path, matcher) -> int:
    import pyarrow.parquet as pq

    from tailstudy.matching import matches_table
    from tailstudy.store import write_parquet

    table = pq.read_table(shard, columns=["sample_id", "caption"])
    matches = matches_table(table.column("sample_id").to_pylist(), table.column("caption").to_pylist(), matcher)
    write_parquet(matches, out)
    return matches.num_rows


def dask_overhead(n_tasks: int) -> dict:
    """Wall time of mapping `n_tasks` empty tasks on a 2-process local Dask cluster, cluster start excluded."""
    from prefect import flow, task

    from tailstudy.flows.task_runners import make_task_runner

    @task
    def nothing(i: int) -> int:
        return i

    @flow
    def overhead(n: int) -> dict:
        nothing.submit(-1).result()  # starts the cluster
        start = time.perf_counter()
        futures = nothing.map(range(n))
        [f.result() for f in futures]
        return {"tasks": n, "seconds": time.perf_counter() - start}

    started = time.perf_counter()
    result = overhead.with_options(task_runner=make_task_runner("dask:2"))(n_tasks)
    result["flow_seconds_with_cluster_start"] = time.perf_counter() - started
    result["ms_per_task"] = 1000 * result["seconds"] / n_tasks
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--captions", type=int, default=400_000)
    parser.add_argument("--shard", type=int, default=200_000)
    parser.add_argument("--dask-tasks", type=int, default=64)
    parser.add_argument("--semantic", type=int, default=0, help="also embed this many captions with the semantic "
                        "matcher's sentence-transformers model, the cost per phrase candidate")
    parser.add_argument("--semantic-device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()

    import pyarrow as pa

    from tailstudy.matching import make_matcher
    from tailstudy.store import write_parquet
    from tailstudy.vocab import load_vocab

    report: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                "load_average_before": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="tailstudy-measure-") as tmpdir:
        tmp = Path(tmpdir)
        captions = world_captions(tmp, args.captions)
        report["captions"] = {"count": len(captions), "distinct": len(set(captions)),
                              "mean_chars": sum(len(c or "") for c in captions) / len(captions)}

        vocab = load_vocab("imagenet1k")
        start = time.perf_counter()
        matcher = make_matcher("phrase", vocab)
        report["matcher_build_seconds"] = time.perf_counter() - start
        seconds, cpu = best_of(3, lambda: matcher.match(captions))
        rows, _, _ = matcher.match(captions)
        report["phrase"] = {"vocab_concepts": len(vocab), "seconds": seconds, "cpu_seconds": cpu,
                            "captions_per_s": len(captions) / seconds, "captions_per_cpu_s": len(captions) / cpu,
                            "matches": int(len(rows)), "matched_caption_share": len(set(rows.tolist())) / len(captions)}

        shard = tmp / "shard.parquet"
        ids = [f"s{i:09d}" for i in range(args.shard)]
        write_parquet(pa.table({"sample_id": ids, "caption": (captions * (args.shard // len(captions) + 1))[: args.shard]}),
                      shard)
        seconds, cpu = best_of(3, lambda: shard_pass(shard, tmp / "matches.parquet", matcher))
        report["shard"] = {"captions": args.shard, "parquet_bytes": shard.stat().st_size, "seconds": seconds,
                           "cpu_seconds": cpu, "captions_per_s": args.shard / seconds,
                           "captions_per_cpu_s": args.shard / cpu}

    if args.semantic:
        from tailstudy.models.minilm import load_minilm

        model = load_minilm(args.semantic_device)
        texts = captions[: args.semantic]
        model.encode(texts[:64], batch_size=64)  # warm-up
        seconds, cpu = best_of(1, lambda: model.encode(texts, batch_size=256, convert_to_numpy=True))
        report["semantic_embedding"] = {"device": args.semantic_device, "captions": len(texts), "seconds": seconds,
                                        "cpu_seconds": cpu,
                                            "captions_per_s": len(texts) / seconds,
                                            "torch_threads": __import__("torch").get_num_threads()}

    if os.environ.get("PREFECT_API_URL"):
        report["dask"] = dask_overhead(args.dask_tasks)
    else:
        report["dask"] = "skipped (set PREFECT_API_URL to a Prefect server to measure the per-task overhead)"
    report["machine"]["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
