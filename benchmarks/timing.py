"""Timing shared by the benchmarks and docs/measure_throughput.py."""
from __future__ import annotations

import time


def best_of(n: int, fn) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds of `n` runs (on a shared machine the CPU time is what one dedicated core
    would take; the wall time includes waiting for a core)."""
    wall, cpu = [], []
    for _ in range(n):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)
