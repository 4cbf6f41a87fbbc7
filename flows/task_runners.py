"""Task runners for the data stages, chosen by name.

Only tasks that a flow *submits* or *maps* (``task.map`` / ``task.submit``), such as the match stage's per-shard
tasks, go through the task runner; tasks called directly run in the flow's own process, whatever the runner.

    local | threads[:N]    Prefect's default thread pool in the flow's process (the default)
    processes[:N]          a pool of N local processes (Prefect's ProcessPoolTaskRunner)
    dask[:N]               a temporary Dask LocalCluster of N single-threaded worker processes, listening on
                           127.0.0.1 only (N defaults to the number of cores)
    tcp://HOST:PORT        an existing Dask cluster's scheduler (``dask://HOST:PORT`` means the same; ``tls://``
                           works when the client has the certificates configured through Dask's config)

The Dask workers must be able to import ``pipeline`` and ``flows`` (run them from deploy/Dockerfile's image, or from a
checkout with the same install) and must see the workspace at the same path (a shared filesystem).
"""
from __future__ import annotations

import functools
import logging
import os

from prefect.logging import get_run_logger
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from tailstudy.errors import InputError

DEFAULT = "local"


def _count(name: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise InputError(f"task runner {name!r}: the worker count must be a positive integer")
    return n


def parse_task_runner(name: str | None) -> tuple[str, dict]:
    """'dask:2' -> ('dask', {'n_workers': 2}); raises InputError for an unknown runner. Pure: builds nothing."""
    name = (name or DEFAULT).strip()
    if "://" in name:
        scheme = name.split("://", 1)[0]
        if scheme not in ("tcp", "tls", "dask") or not name.split("://", 1)[1]:
            raise InputError(f"task runner {name!r}: a Dask scheduler address is tcp://HOST:PORT (or dask://, tls://)")
        address = "tcp://" + name.split("://", 1)[1] if scheme == "dask" else name
        return "dask-address", {"address": address}
    kind, _, count = name.partition(":")
    if kind not in ("local", "threads", "processes", "dask"):
        raise InputError(f"unknown task runner {name!r} (use local, threads[:N], processes[:N], dask[:N] or tcp://HOST:PORT)")
    if kind == "local" and count:
        raise InputError(f"task runner {name!r}: 'local' takes no count (use threads:N)")
    options = {"n_workers": _count(name, count)} if count else {}
    return ("threads" if kind == "local" else kind), options


def local_cluster_kwargs(n_workers: int | None = None) -> dict:
    """A LocalCluster that only listens on the loopback interface and starts no dashboard."""
    return {"n_workers": n_workers or os.cpu_count() or 1, "threads_per_worker": 1, "processes": True,
            "host": "127.0.0.1", "dashboard_address": None}


@functools.cache
def _dask_task_runner_class():
    from prefect_dask import DaskTaskRunner  # dask + distributed (a second or more): only when a Dask runner is named

    class LoggedDaskTaskRunner(DaskTaskRunner):
        """prefect-dask's runner, which starts (or connects to) its cluster at the first submitted task; this one also
        writes the scheduler and worker addresses to the flow run's log when it does."""

        @property
        def client(self):
            new = self._client is None
            client = super().client
            if new:
                log_cluster(client)
            return client

    return LoggedDaskTaskRunner


def log_cluster(client) -> str:
    workers = sorted(client.scheduler_info().get("workers", {}))
    shown = ", ".join(workers[:8]) + (f", ... ({len(workers) - 8} more)" if len(workers) > 8 else "")
    message = f"Dask cluster {client.scheduler.address}: {len(workers)} workers ({shown})"
    try:
        get_run_logger().info(message)
    except Exception:  # outside a run context
        logging.getLogger("tailstudy.task_runners").info(message)
    return message


def make_task_runner(name: str | None):
    """Build the Prefect task runner named by ``name`` (see the module docstring)."""
    kind, options = parse_task_runner(name)
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=options.get("n_workers"))
    if kind == "processes":
        return ProcessPoolTaskRunner(max_workers=options.get("n_workers"))
    DaskTaskRunner = _dask_task_runner_class()
    if kind == "dask-address":
        return DaskTaskRunner(address=options["address"])
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs=local_cluster_kwargs(options.get("n_workers")))
