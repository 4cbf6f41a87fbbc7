"""The wheel is a library install: built from the checkout, installed into a fresh virtualenv, `tailstudy match` and
`tailstudy run` work from a folder outside the checkout (data and SQL come from the package via importlib.resources),
and `deploy` / `submit` read the prefect.yaml the wheel ships.
Its metadata keeps what ordinary resolution would install runnable: img2dataset (which requires the `dataclasses`
backport that breaks Prefect's server) only in the `ingest` extra, webdataset and pandas capped to tested releases.

The fresh venv gets tailstudy alone (--no-deps); its dependencies come from this venv's site-packages through a .pth
file, so the test does not download or copy torch."""
from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, _PREFECT_HOME

MINI_SPEC = """\
name: mini
corpus: {concepts: 6, open_concepts: 2, samples: 400, open_samples: 40, profile: laion400m, min_count: 8, seed: 0}
evaluate: {per_class: 4}
base: {imbalance: natural, caption: full}
factors:
  caption: [a_cname]
learners: [sl]
train: {arch: tiny, epochs: 1, batch_size: 128}
seeds: [0]
"""


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=900, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", root / "dist",
                REPO)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((root / "dist").glob("tailstudy-*.whl"))
    made = run(getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", root / "venv")
    assert made.returncode == 0, made.stderr
    target = next((root / "venv" / "lib").glob("python3*/site-packages"))
    done = run(sys.executable, "-m", "pip", "--python", root / "venv" / "bin" / "python", "install", "-q",
               "--no-deps", wheel)
    assert done.returncode == 0, done.stderr[-3000:]
    (target / "tailstudy-deps.pth").write_text(site.getsitepackages()[0] + "\n")
    return root


def tailstudy(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": _PREFECT_HOME, "PYTHONPATH": ""}
    return run(root / "venv" / "bin" / "tailstudy", *args, cwd=root / "elsewhere", env=env)


@pytest.mark.slow
def test_wheel_carries_its_data_and_runs_outside_the_checkout(installed):
    where = run(installed / "venv" / "bin" / "python", "-c",
                "import tailstudy, tailstudy.paths as p; print(tailstudy.__file__, p.DATA_DIR, p.SQL_DIR)",
                cwd=installed)
    module, data, sql = where.stdout.split()
    assert str(REPO) not in module and Path(data).is_relative_to(Path(module).parent)
    assert (Path(data) / "studies" / "default.yaml").is_file() and (Path(sql) / "views.sql").is_file()
    (installed / "elsewhere" / "ws").mkdir(parents=True)
    caps = ["a photo of a goldfish", "a tench in a net", "my dog, a beagle", "nothing here"] * 3
    pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(caps))], "caption": caps}).to_parquet(
        installed / "elsewhere" / "small.parquet")
    done = tailstudy(installed, "match", "small.parquet", "--vocab", "imagenet1k", "-j", "1", "-w", "ws")
    assert done.returncode == 0, done.stderr
    top = tailstudy(installed, "sql", "select name, count from concept_freq where count > 0 order by name",
                    "--format", "csv", "-w", "ws")
    assert top.stdout.split() == ["name,count", "Beagle,3", "goldfish,3", "tench,3"], top.stderr
    (installed / "elsewhere" / "mini.yaml").write_text(MINI_SPEC)
    done = tailstudy(installed, "run", "mini.yaml", "-w", "ws")
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((installed / "elsewhere" / "ws" / "report").glob("*/report.html"))


def test_wheel_metadata_keeps_the_server_runnable_and_caps_what_the_product_needs(installed):
    from email.parser import Parser

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    info = next((installed / "venv" / "lib").glob("python3*/site-packages/tailstudy-*.dist-info"))
    reqs = [Requirement(r) for r in Parser().parsestr((info / "METADATA").read_text()).get_all("Requires-Dist")]
    core = {canonicalize_name(r.name): r.specifier for r in reqs if r.marker is None}
    ingest = {canonicalize_name(r.name): r.specifier for r in reqs
              if r.marker is not None and r.marker.evaluate({"extra": "ingest"})}
    assert "img2dataset" not in core and "dataclasses" not in core  # so `pip install tailstudy` never shadows it
    assert ingest["img2dataset"].contains("1.47.0") and not ingest["img2dataset"].contains("1.48.0")
    assert core["webdataset"].contains("0.2.86") and not core["webdataset"].contains("0.2.96")  # KeyError: 'fname'
    assert core["pandas"].contains("2.3.3") and not core["pandas"].contains("3.0.0")


def test_deploy_and_submit_from_the_wheel_read_its_own_prefect_yaml(installed):
    """The wheel ships deploy/prefect.yaml and the GPU pool's job template; its entrypoints are module paths of the
    installed package. With no server listening (a closed port on 127.0.0.1), `deploy` and `submit --deployment NAME`
    get as far as the server: the whole file read and checked, the deployment name resolved."""
    package = Path(run(installed / "venv" / "bin" / "python", "-c", "import tailstudy; print(tailstudy.__file__)",
                       cwd=installed).stdout.strip()).parent
    assert (package / "deploy" / "prefect.yaml").read_bytes() == (REPO / "deploy" / "prefect.yaml").read_bytes()
    assert (package / "deploy" / "work-pools" / "kubernetes-gpu.json").is_file()
    (installed / "elsewhere").mkdir(exist_ok=True)
    (installed / "elsewhere" / "mini.yaml").write_text(MINI_SPEC)
    env = {**os.environ, "PREFECT_HOME": _PREFECT_HOME, "PYTHONPATH": "", "PREFECT_API_URL": "http://127.0.0.1:9/api",
           "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    for args, needle in ((["deploy"], "cannot reach the Prefect server at http://127.0.0.1:9/api"),
                         (["submit", "mini.yaml", "--deployment", "study-gpu"],
                          "cannot submit tailstudy-run-study/study-gpu to http://127.0.0.1:9/api")):
        done = run(installed / "venv" / "bin" / "tailstudy", *args, cwd=installed / "elsewhere", env=env)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2 and len(lines) == 1 and needle in lines[0], done.stderr


def test_a_module_shadowing_the_standard_library_is_named_with_what_to_run(tmp_path):
    """Prefect starts its server with its site-packages folder first on sys.path (uvicorn --app-dir): a file there
    named like a standard-library module replaces it in that process. Named before any run, and in the start-up
    error."""
    from tailstudy.lifeline import shadowed_stdlib, startup_timeout_message

    assert shadowed_stdlib() == []  # this environment (deploy/setup.sh leaves the backport out)
    (tmp_path / "dataclasses.py").write_text("# the 0.6 backport's name\n")
    (tmp_path / "fine.py").write_text("")
    found = shadowed_stdlib(tmp_path)
    assert len(found) == 1 and f"{tmp_path / 'dataclasses.py'} shadows" in found[0]
    assert "pip uninstall -y dataclasses" in found[0]
    exited = RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server. Ephemeral server "
                          "process exited with code 1. stdout: None")
    assert "exited with code 1 before it answered" in startup_timeout_message(exited)
    assert startup_timeout_message(RuntimeError("something else")) is None
