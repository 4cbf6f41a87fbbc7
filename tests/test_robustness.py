"""Locks, integrity checks, the download size cap and the orphan watchdog, with real processes, files and sockets."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pytest

from tailstudy.errors import InputError
from tailstudy.store import Workspace, write_parquet
from tests.conftest import VENV_BIN

HOLD_LOCK = """
import sys, time
from tailstudy.locks import file_lock
with file_lock(__import__('pathlib').Path(sys.argv[1]), 'test lock'):
    print('held', flush=True)
    time.sleep(600)
"""


def hold_lock(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def build_table(ws: Workspace, stage: str = "curate", key: str = "k1", rows: int = 100) -> Path:
    def build(out: Path) -> dict:
        write_parquet(pa.table({"x": list(range(rows))}), out / "t.parquet")
        (out / "note.txt").write_text("hello")
        return {"rows": {"t": rows}}

    ws.produce(stage, key, build, {})
    return ws.root / stage / key


# ---------------------------------------------------------------- locks

def test_a_busy_lock_names_its_holder_and_a_killed_holders_lock_is_taken_over(tmp_path):
    from tailstudy.locks import file_lock

    path = tmp_path / ".lock"
    holder = hold_lock(path)
    try:
        with pytest.raises(InputError, match=f"busy: locked by PID {holder.pid} on"):
            with file_lock(path, "the workspace", timeout=0):
                pass
        said: list[str] = []
        with pytest.raises(InputError, match="still busy after 0.6 s"):
            with file_lock(path, "the workspace", timeout=0.6, say=said.append):
                pass
        assert said and "waiting for the workspace" in said[0]
    finally:
        holder.kill()
        holder.wait()
    said = []
    with file_lock(path, "the workspace", timeout=0, say=said.append):  # the kernel released the dead holder's lock
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert said and f"from PID {holder.pid}" in said[0] and "which is gone" in said[0]
    assert not path.exists()  # a clean release leaves nothing behind


def test_stale_temps_are_removed_only_when_their_builder_is_gone(tmp_path):
    ws = Workspace(tmp_path)
    live = tmp_path / "train" / ".tmp-aaaa-1234abcd"
    dead = tmp_path / "train" / ".tmp-bbbb-5678abcd"
    live.mkdir(parents=True)
    dead.mkdir()
    holder = hold_lock(ws.lock_path("train", "aaaa"))
    try:
        assert ws.clean_stale_temps() == 1
        assert live.is_dir() and not dead.exists()
    finally:
        holder.kill()
        holder.wait()
    assert ws.clean_stale_temps() == 1 and not live.exists()


def test_concurrent_builders_of_one_artifact_build_it_once(tmp_path):
    ws = Workspace(tmp_path)
    calls: list[int] = []

    def build(out: Path) -> dict:
        calls.append(1)
        time.sleep(0.3)
        (out / "v.txt").write_text("same")
        return {}

    results = []
    threads = [threading.Thread(target=lambda: results.append(ws.produce("report", "k", build, {})))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and sorted(results) == ["ran", "reused", "reused"]


# ---------------------------------------------------------------- integrity

def test_manifest_records_size_and_checksum_of_every_file(tmp_path):
    import hashlib

    path = build_table(Workspace(tmp_path))
    files = json.loads((path / "manifest.json").read_text())["files"]
    assert sorted(files) == ["note.txt", "t.parquet"]
    for rel, record in files.items():
        data = (path / rel).read_bytes()
        assert record == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("damage,fragment", [
    ("overwrite_middle", "checksum differs"),
    ("truncate", "size"),
    ("remove", "missing file"),
    ("manifest_garbage", "corrupt manifest (not valid JSON)"),
    ("manifest_empty", "corrupt manifest"),
    ("manifest_empty_object", "corrupt manifest (empty"),
])
def test_a_damaged_artifact_is_named_and_rebuilt(tmp_path, damage, fragment, capsys):
    ws = Workspace(tmp_path)
    path = build_table(ws)
    original = (path / "t.parquet").read_bytes()
    target = path / "t.parquet"
    if damage == "overwrite_middle":
        data = bytearray(original)
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(original[:-10])
    elif damage == "remove":
        target.unlink()
    else:
        target = path / "manifest.json"
        target.write_text({"manifest_garbage": '{"stage": "cu', "manifest_empty": "",
                           "manifest_empty_object": "{}"}[damage])
    problem = ws.problem("curate", "k1")
    assert problem and fragment in problem and str(target) in problem
    assert not ws.exists("curate", "k1")
    assert "corrupt artifact curate/k1" in capsys.readouterr().err
    build_table(Workspace(tmp_path))  # the next run rebuilds it
    assert (path / "t.parquet").read_bytes() == original and ws.problem("curate", "k1", full=True) is None


def test_artifacts_built_before_checksums_are_reused_and_their_parquet_checked(tmp_path):
    ws = Workspace(tmp_path)
    path = build_table(ws)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["files"]  # as the previous version wrote it
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert ws.exists("curate", "k1")
    assert ws.produce("curate", "k1", lambda out: pytest.fail("rebuilt"), {}) == "reused"
    data = (path / "t.parquet").read_bytes()
    (path / "t.parquet").write_bytes(data[:-4] + b"XXXX")  # a broken footer
    assert "no PAR1 magic" in ws.problem("curate", "k1")


def test_status_and_verify_name_corrupt_artifacts(tmp_path):
    ws = Workspace(tmp_path / "ws")
    good = build_table(ws, key="k1")
    bad = build_table(ws, key="k2")
    data = bytearray((bad / "t.parquet").read_bytes())
    data[20] ^= 0xFF
    (bad / "t.parquet").write_bytes(bytes(data))
    (good / "manifest.json").write_text("{")
    env = {**os.environ, "COLUMNS": "300"}
    status = subprocess.run([str(VENV_BIN / "tailstudy"), "status", "-w", str(ws.root)], capture_output=True,
                            text=True, env=env)
    assert status.returncode == 0 and "Traceback" not in status.stderr
    assert f"corrupt: curate/k1: {good / 'manifest.json'}" in status.stderr
    assert f"corrupt: curate/k2: {bad / 't.parquet'}: checksum differs" in status.stderr
    verify = subprocess.run([str(VENV_BIN / "tailstudy"), "verify", "-w", str(ws.root)], capture_output=True,
                            text=True, env=env)
    assert verify.returncode == 2 and "2 corrupt" in verify.stdout


def test_an_unreadable_checkpoint_is_discarded_with_a_line(tmp_path):
    import torch

    from tailstudy.integrity import discard_unreadable

    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1}, ckpt)
    said: list[str] = []
    load = lambda p: torch.load(p, map_location="cpu", weights_only=False)  # noqa: E731
    assert not discard_unreadable(ckpt, load, said.append) and ckpt.is_file()
    ckpt.write_bytes(ckpt.read_bytes()[:20])
    assert discard_unreadable(ckpt, load, said.append) and not ckpt.exists()
    assert said and str(ckpt) in said[0] and "restarts" in said[0]


def test_a_forced_rebuild_never_resumes(tmp_path):
    ws = Workspace(tmp_path)
    work = ws.scratch_dir("train", "k")
    (work / "checkpoint.pt").write_bytes(b"garbage")
    assert (ws.scratch_dir("train", "k") / "checkpoint.pt").exists()
    assert not (ws.scratch_dir("train", "k", fresh=True) / "checkpoint.pt").exists()


# ---------------------------------------------------------------- download size cap

class _Big(BaseHTTPRequestHandler):
    SIZE = 300 << 20

    def log_message(self, *_args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if self.path == "/declared":
            self.send_header("Content-Length", str(self.SIZE))
        self.end_headers()
        chunk = b"x" * (1 << 20)
        try:
            for _ in range(self.SIZE >> 20):
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def big_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Big)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("path", ["/declared", "/undeclared"])
def test_a_300_mb_url_is_refused_without_reading_it_whole(big_server, path, monkeypatch):
    from tailstudy.corpus.download_cap import ENV, capped_download_image
    from tailstudy.corpus.ingest import error_kind, is_transient

    monkeypatch.setenv(ENV, str(4 << 20))
    tracemalloc.start()
    key, stream, message = capped_download_image((7, big_server + path), 30, None, None)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert key == 7 and stream is None and "larger than the size cap" in message
    assert peak < 12 << 20  # the cap (4 MB) + buffers, never the 300 MB body
    kind = error_kind("failed_to_download", message)
    assert kind == "too_large" and not is_transient("failed_to_download", kind)


# ---------------------------------------------------------------- no orphans

def _descendants(pid: int) -> list:
    import psutil

    return psutil.Process(pid).children(recursive=True)


def _still_running(procs: list) -> list:
    import psutil

    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_kill_9_of_match_leaves_no_pool_workers(tmp_path):
    captions = tmp_path / "captions"  # one shard per text file: four shards for two pool workers
    captions.mkdir()
    for part in range(4):
        rows = ["caption"] + [f"a photo of a goldfish and a tench number {i}" for i in range(150_000)]
        (captions / f"part{part}.csv").write_text("\n".join(rows) + "\n")
    proc = subprocess.Popen([str(VENV_BIN / "tailstudy"), "match", str(captions), "--vocab", "imagenet100",
                             "-j", "2", "-w", str(tmp_path / "ws")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    kids: list = []
    while time.monotonic() < deadline and proc.poll() is None:
        kids = _descendants(proc.pid)
        if len(kids) >= 3:  # the watchdog and at least two pool workers
            break
        time.sleep(0.2)
    assert proc.poll() is None and len(kids) >= 3, "the match ended before its workers could be seen"
    time.sleep(1.0)
    kids = _descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _still_running(kids):
        time.sleep(0.3)
    assert not _still_running(kids), [p.cmdline() for p in _still_running(kids)]


# ---------------------------------------------------------------- Prefect start-up

def test_a_server_that_does_not_start_in_time_is_one_line_naming_the_setting(tmp_path):
    from tailstudy.lifeline import STARTUP_SETTING

    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\ncorpus: {concepts: 10, samples: 200}\ntrain: {arch: tiny, epochs: 1}\n")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"), STARTUP_SETTING: "0", "COLUMNS": "300"}
    done = subprocess.run([str(VENV_BIN / "tailstudy"), "run", str(spec), "-w", str(tmp_path / "ws")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and STARTUP_SETTING in lines[0], done.stderr[-2000:]


def test_our_start_up_timeout_is_a_default_the_user_overrides(monkeypatch):
    from tailstudy.lifeline import STARTUP_SETTING, prefect_startup_defaults

    monkeypatch.delenv(STARTUP_SETTING, raising=False)
    prefect_startup_defaults()
    assert int(os.environ[STARTUP_SETTING]) >= 120
    monkeypatch.setenv(STARTUP_SETTING, "7")
    prefect_startup_defaults()
    assert os.environ[STARTUP_SETTING] == "7"
