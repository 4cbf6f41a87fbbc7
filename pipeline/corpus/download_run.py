"""Running img2dataset in this process: its Python API with our offline environment, its output sent to a log, its
signal handling disabled, and the per-image size cap (download_cap) installed for the call."""
from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Iterator, Optional

from tailstudy.env import configure_offline_env
from tailstudy.errors import InputError

SHARD_DIGITS = 5  # img2dataset's oom_shard_count


def check_img2dataset(what: str) -> None:
    """URL downloads need img2dataset, an optional dependency (the `ingest` extra; see pyproject.toml for why)."""
    if importlib.util.find_spec("img2dataset") is None:
        raise InputError(f"{what} downloads with img2dataset, which is not installed: pip install 'tailstudy[ingest]'")


def _offline_env() -> None:
    configure_offline_env()  # NO_ALBUMENTATIONS_UPDATE=1 etc., inherited by img2dataset's spawned processes
    for name, value in (("WANDB_MODE", "disabled"), ("WANDB_SILENT", "true"), ("WANDB_DISABLED", "true")):
        os.environ.setdefault(name, value)


@contextlib.contextmanager
def _output_to(log: Optional[Path]) -> Iterator[None]:
    """Send fds 1 and 2 (ours and those of the processes img2dataset spawns) to `log` for the duration."""
    if log is None:
        yield
        return
    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:  # no stdout/stderr to redirect
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


class _NoSignals:
    """Stands in for the `signal` module inside img2dataset.main: its SIGINT handler would delete the work files and
    exit 0 (an interrupted ingest would look like a success), and installing it fails outside the main thread
    (Prefect runs tasks in worker threads). Without it Ctrl-C raises KeyboardInterrupt as everywhere else."""

    SIGINT = 2

    @staticmethod
    def signal(*_args, **_kwargs):
        return None


def run_img2dataset(url_list: Path, output: Path, cfg, mode: str, log: Optional[Path]) -> None:
    """One img2dataset.download call: webdataset shards of `cfg.image_size` images into `output`."""
    _offline_env()
    from tailstudy.corpus.download_cap import capped  # img2dataset: the optional `ingest` extra

    i2d = sys.modules["img2dataset.main"]  # its package exports a function named `main`, hiding the module
    real_signal = i2d.signal
    i2d.signal = _NoSignals
    try:
        with _output_to(log), capped(i2d, cfg.max_image_mb):
            i2d.download(
                url_list=str(url_list), input_format="parquet", url_col="url", caption_col="caption",
                save_additional_columns=["sample_id"], output_folder=str(output), output_format="webdataset",
                image_size=cfg.image_size, resize_mode=cfg.resize_mode, encode_format=cfg.encode_format,
                processes_count=cfg.processes, thread_count=cfg.threads, number_sample_per_shard=cfg.shard_size,
                timeout=cfg.timeout, retries=cfg.retries, incremental_mode=mode, extract_exif=False,
                compute_hash="sha256", enable_wandb=False, distributor="multiprocessing", max_shard_retry=1,
                oom_shard_count=SHARD_DIGITS,
            )
    except BaseException:
        # img2dataset joins its logger process only on success; stop the one this call started
        for child in multiprocessing.active_children():
            if isinstance(child, i2d.LoggerProcess):
                child.terminate()
                child.join(5)
        raise
    finally:
        i2d.signal = real_signal


