"""Running a study flow from the CLI or tests: per-workspace Prefect result storage, quiet logs by default."""
from __future__ import annotations

import logging
from pathlib import Path

from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

from tailstudy.flows.study import study_flow, study_flow_with
from tailstudy.locks import stderr_say
from tailstudy.spec import StudySpec
from tailstudy.store import Workspace

PREFECT_LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.server", "uvicorn", "httpx")


def quiet_prefect(verbose: bool) -> None:
    """Prefect's own console logs (server start, task states, failure tracebacks) only with --verbose; our CLI prints
    the stage summary and one-line errors itself."""
    level = logging.INFO if verbose else logging.CRITICAL
    for name in PREFECT_LOGGERS:
        logging.getLogger(name).setLevel(level)


def run_study(spec_path: str, workspace: str, force: list[str] | None = None, verbose: bool = False,
              task_runner: str | None = None, jobs: int = 1, lock_timeout: float | None = None,
              spec: StudySpec | None = None) -> dict:
    """Run the study flow in this process; `task_runner` (local, threads:N, processes:N, dask:N, tcp://HOST:PORT)
    executes the match stage's per-shard tasks (see flows/task_runners.py); None keeps the flow's default. `jobs`:
    CPU-bound nodes (curate, evaluate, ...) that may run at once. `spec`: the spec at `spec_path`, where the caller
    parsed it already (`tailstudy run` does, to check it): the flow uses it instead of parsing the file again. The
    workspace is locked for the run: a second run on it waits (at most `lock_timeout` s), then reuses what it finds."""
    with Workspace(workspace).lock(lock_timeout, stderr_say):
        return _run_study(spec_path, workspace, force, verbose, task_runner, jobs, spec)


def _run_study(spec_path: str, workspace: str, force: list[str] | None, verbose: bool, task_runner: str | None,
               jobs: int, spec: StudySpec | None) -> dict:
    # the task cache lives with the artifacts it describes: deleting a workspace deletes its cache too
    results = Path(workspace).resolve() / ".prefect" / "results"
    results.mkdir(parents=True, exist_ok=True)
    quiet_prefect(verbose)
    with temporary_settings(updates={PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(results)}):
        flow_ = study_flow if task_runner is None else study_flow_with(task_runner)
        return flow_(spec_path, workspace, force or [], jobs, spec=spec)
