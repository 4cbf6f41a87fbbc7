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
from tests.conftest import VENV_BIN, sigint_on_import, sigint_state, terminal_sigint

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
    del manifest["files"], manifest["format"]  # as versions before checksums wrote it
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
    (tmp_path / "ws").mkdir()
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
    (tmp_path / "ws").mkdir()
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


# ---------------------------------------------------------------- children import only what is installed

SHADOWS = ("concurrent", "json", "multiprocessing", "signal", "subprocess", "uvicorn", "typing_extensions", "anyio")
TINY_RUN = ("name: iso\ncorpus: {concepts: 5, open_concepts: 0, samples: 100, open_samples: 0, min_count: 1}\n"
            "evaluate: {per_class: 2}\nlearners: [sl]\ntrain: {arch: tiny, epochs: 1, batch_size: 32}\n")


def _shadowing_cwd(tmp_path: Path) -> Path:
    """A working directory whose `json.py`, `concurrent.py`, ... record that they were imported."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for name in SHADOWS:
        (cwd / f"{name}.py").write_text(f"open({str(cwd / 'imported.txt')!r}, 'a').write({name!r} + '\\n')\n")
    (cwd / "ws").mkdir()
    return cwd


@pytest.mark.slow
def test_no_child_imports_the_callers_files(tmp_path):
    """Prefect's server (`python -m uvicorn`), the watchdog (`python -m`), forkserver/spawn workers (`python -c`) put
    their current directory first on sys.path unless PYTHONSAFEPATH is set, as every entry point now does."""
    cwd = _shadowing_cwd(tmp_path)
    captions = cwd / "caps"
    captions.mkdir()
    for part in range(2):
        (captions / f"p{part}.csv").write_text("caption\n" + "a goldfish in a bowl\n" * 3000)
    (cwd / "iso.yaml").write_text(TINY_RUN)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "COLUMNS": "200"}
    env.pop("PYTHONSAFEPATH", None)  # as a user's shell has it
    for args in (["match", "caps", "--vocab", "imagenet100", "-j", "2", "-w", "ws"], ["sql", "@top_concepts", "-w", "ws"],
                 ["run", "iso.yaml", "-w", "ws"]):
        done = subprocess.run([str(VENV_BIN / "tailstudy"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, (args, done.stderr[-2000:])
        time.sleep(1.0)  # the watchdog outlives its parent by a moment
        assert not (cwd / "imported.txt").exists(), (args, (cwd / "imported.txt").read_text())


@pytest.mark.slow
def test_kill_9_just_as_prefects_server_starts_leaves_nothing_running(tmp_path):
    """The watchdog finds the children of a killed run by the mark they inherit, not by its last look at the process
    tree: a server started a few milliseconds before the kill is ended too."""
    import psutil

    cwd = tmp_path
    (cwd / "ws").mkdir()
    (cwd / "iso.yaml").write_text(TINY_RUN)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "COLUMNS": "200"}
    proc = subprocess.Popen([str(VENV_BIN / "tailstudy"), "run", "iso.yaml", "-w", "ws"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server, seen = None, []
    deadline = time.monotonic() + 300
    while server is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            seen = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            break
        for child in seen:
            try:
                if "uvicorn" in " ".join(child.cmdline()):
                    server = child
            except psutil.Error:
                pass
        time.sleep(0.01)
    assert server is not None, "the run ended before Prefect's server started"
    os.kill(proc.pid, signal.SIGKILL)  # within ~10 ms of the server's start: never seen by a half-second poll
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _still_running(seen):
        time.sleep(0.3)
    assert not _still_running(seen), [p.cmdline() for p in _still_running(seen)]


# ---------------------------------------------------------------- nothing left behind; manifests cannot switch checks off

@pytest.mark.parametrize("edit,fragment", [
    (lambda m: m.update(files={}), "not recorded in the manifest"),
    (lambda m: m.update(files="all good"), "not a mapping"),
    (lambda m: m["files"].pop("t.parquet"), "not recorded in the manifest"),
    (lambda m: m.pop("files"), "not a mapping"),  # format 2 requires the record
])
def test_a_manifest_cannot_switch_integrity_checks_off(tmp_path, edit, fragment):
    ws = Workspace(tmp_path)
    path = build_table(ws)
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    assert fragment in (ws.problem("curate", "k1") or "")
    assert not ws.exists("curate", "k1")  # rebuilt by the next run


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_every_writers_temp_is_cleaned_when_its_writer_is_gone(tmp_path):
    from tailstudy.store import temp_path, writer_tag

    ws = Workspace(tmp_path / "ws")
    build_table(ws)
    host, dead = writer_tag().split("-")[0], _dead_pid()
    work = ws.scratch_dir("train", "k9")
    (work / "ckpt.pt").write_bytes(b"a finished checkpoint")  # resumable work: kept
    left = [ws.root / f".catalog-{host}-{dead}-0123abcd.duckdb", ws.root / f".catalog-{host}-{dead}-0123abcd.duckdb.wal",
            ws.root / "studies" / "s" / f".runs.parquet.{host}-{dead}-89abcdef.tmp",
            ws.root / "specs" / f".s.yaml.{host}-{dead}-01234567.tmp",
            work / f".ckpt.pt.{host}-{dead}-fedcba98.tmp", work / ".shard.tar.0a1b2c3d.tmp",
            ws.root / ".catalog-0a1b2c3d.duckdb"]  # untagged, from an older version: cleaned when an hour old
    live = [temp_path(ws.root / "studies" / "s" / "subsets.parquet"),  # this process writes it
            ws.root / f".catalog-ffffff-{dead}-0123abcd.duckdb",  # another host's writer: not ours to judge
            ws.root / ".catalog-1a1b2c3d.duckdb"]  # untagged and recent
    for path in left + live:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    os.utime(left[-1], (time.time() - 7200, time.time() - 7200))
    with ws.lock(0):  # whoever takes the workspace cleans first
        pass
    assert [p for p in left if p.exists()] == []
    assert all(p.exists() for p in live) and (work / "ckpt.pt").exists()
    assert ws.exists("curate", "k1")


def test_a_locked_work_directory_keeps_its_temps(tmp_path):
    from tailstudy.store import writer_tag

    ws = Workspace(tmp_path / "ws")
    work = ws.scratch_dir("train", "k9")
    temp = work / f".ckpt.pt.{writer_tag().split('-')[0]}-{_dead_pid()}-fedcba98.tmp"
    temp.write_bytes(b"x")
    holder = hold_lock(ws.lock_path("train", "k9"))  # a live builder of train/k9 in another process
    try:
        ws.clean_stale_temps()
        assert temp.exists()
    finally:
        holder.kill()
        holder.wait()
    ws.clean_stale_temps()
    assert not temp.exists()


def test_corrupt_study_records_are_named_and_never_break_the_catalog(tmp_path, capsys):
    from tailstudy import catalog
    from tailstudy.store import write_parquet

    ws = Workspace(tmp_path / "ws")
    build_table(ws)
    study = ws.root / "studies" / "s"
    write_parquet(pa.table({"subset_key": ["k1"], "study": ["s"], "factor": ["base"], "level": ["base"]}),
                  study / "subsets.parquet")
    (study / "runs.parquet").write_bytes(b"PAR1 this is not a parquet file PAR1")
    (study / "spec.json").write_text("{")
    assert "runs.parquet: corrupt Parquet file" in ws.record_problems()[0]
    done = subprocess.run([str(VENV_BIN / "tailstudy"), "verify", "-w", str(ws.root)], capture_output=True, text=True)
    assert done.returncode == 2 and "runs.parquet: corrupt Parquet file" in done.stderr, done.stderr
    catalog.refresh(ws)  # the corrupt record is removed with a line; the views read the rest
    assert "run study s again" in capsys.readouterr().err and not (study / "runs.parquet").exists()
    assert catalog.query(ws, "select count(*) as n from study_subsets").n[0] == 1


# ---------------------------------------------------------------- a full disk

@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs (root, Linux; skipped where mounting is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a small file system here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_is_one_line_naming_it_and_leaves_no_partial_file(small_disk):
    import torch

    from tailstudy.store import write_parquet
    from tailstudy.train import _save_atomic

    with pytest.raises(InputError, match=rf"^{small_disk}: the disk is full \(.* free of .*needed more than"):
        _save_atomic({"w": torch.zeros(2_000_000)}, small_disk / "ckpt.pt")  # 8 MB: torch's '... unexpected pos'
    with pytest.raises(InputError, match=rf"^{small_disk}: the disk is full"):
        write_parquet(pa.table({"x": list(os.urandom(4_000_000))}), small_disk / "t.parquet")
    ws = Workspace(small_disk / "ws")
    with pytest.raises(InputError, match=rf"^{small_disk}: the disk is full .*needed more than"):
        ws.produce("curate", "k1", lambda out: (out / "big.bin").write_bytes(os.urandom(4_000_000)) and {}, {})
    assert [p.name for p in small_disk.rglob("*") if p.is_file()] == []  # no partial file, no temp directory


@pytest.mark.slow
def test_a_run_on_a_full_disk_ends_in_one_line_and_leaves_no_temp(small_disk, tmp_path):
    (small_disk / "ws").mkdir()
    (tmp_path / "iso.yaml").write_text(TINY_RUN)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "COLUMNS": "300"}
    done = subprocess.run([str(VENV_BIN / "tailstudy"), "run", str(tmp_path / "iso.yaml"), "-w", str(small_disk / "ws")],
                          env=env, capture_output=True, text=True, timeout=900)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert len(errors) == 1 and f"{small_disk}: the disk is full" in errors[0], done.stderr[-3000:]
    temps = [p for p in small_disk.rglob("*") if p.name.endswith(".tmp") or p.name.startswith((".tmp-", ".catalog-"))]
    assert temps == []


def test_ctrl_c_while_the_command_line_imports_is_one_line(tmp_path):
    # Ctrl-C while the command line imports its dependencies (typer is among the first)
    (tmp_path / "sitecustomize.py").write_text(sigint_on_import("typer"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run([str(VENV_BIN / "tailstudy"), "status", "-w", str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=120, preexec_fn=terminal_sigint)
    assert done.returncode == 130 and done.stderr.strip() == "interrupted", \
        (done.returncode, done.stderr[-2000:], sigint_state())
