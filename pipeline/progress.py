"""Progress bars for long stages; created lazily so reused stages print nothing."""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

from tqdm import tqdm


@contextlib.contextmanager
def item_bar(desc: str, unit: str = "img") -> Iterator[Callable[[int, int], None]]:
    """Callback(step, total) that advances a bar by `step` items."""
    bar: list[tqdm] = []

    def advance(step: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc=desc, unit=unit, unit_scale=unit != "img", file=sys.stderr,
                            dynamic_ncols=True, mininterval=1.0))
        bar[0].update(step)

    try:
        yield advance
    finally:
        if bar:
            bar[0].close()


@contextlib.contextmanager
def epoch_bar(desc: str, epochs: int) -> Iterator[Callable[[int, int, dict], None]]:
    """Callback(epoch_done, epochs, log_row) showing loss and throughput per epoch."""
    bar: list[tqdm] = []

    def advance(done: int, total: int, row: dict) -> None:
        if not bar:
            bar.append(tqdm(total=total, initial=done - 1, desc=desc, unit="epoch", file=sys.stderr,
                            dynamic_ncols=True))
        bar[0].set_postfix(loss=f"{row['loss']:.3f}", img_s=f"{row['samples_per_s']:.0f}")
        bar[0].update(1)

    try:
        yield advance
    finally:
        if bar:
            bar[0].close()
