"""Real corpora in: img2dataset downloads from a loopback HTTP server, the retry step, resume after a kill, existing
webdataset shards, ImageNet-Captions-style folders, and bad inputs."""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import tarfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from tailstudy import catalog
from tailstudy.errors import InputError, SpecError, TailstudyError
from tailstudy.spec import FolderCorpusSpec, UrlsCorpusSpec, WebdatasetCorpusSpec, load_spec, parse_spec
from tailstudy.stages import corpus_config, plan_study, run_local, source_node
from tailstudy.stages import target_concepts as corpus_targets
from tailstudy.store import Workspace
from tests.conftest import VENV_BIN

# four ImageNet classes whose names match only themselves in imagenet1k
CLASSES = {"goldfish": ("n01443537", (230, 120, 20)), "ostrich": ("n01518878", (120, 90, 60)),
           "lemon": ("n07749582", (240, 230, 40)), "broccoli": ("n07714990", (40, 150, 50))}
FORMATS = {"jpg": ("JPEG", "image/jpeg"), "png": ("PNG", "image/png"), "webp": ("WEBP", "image/webp")}
SLOW_S = 4.0  # a slow response: longer than the 2 s download timeout of the loopback corpus
MAX_REQUESTS = 2000  # the server answers 503 beyond this: a runaway client cannot hang the suite


def build_corpus(ws: Workspace, graph):
    """The study corpus node (and its source node) of `graph`, built or reused."""
    return run_local(ws, [graph.node("corpus")])["corpus"]


def build_source(ws: Workspace, cfg):
    return run_local(ws, [source_node(cfg)])["source"]


def target_concepts(ws: Workspace, graph) -> list[int]:
    return corpus_targets(ws.artifact("corpus", graph.key("corpus")).path)


def picture(cls: str, i: int, size: int = 40) -> np.ndarray:
    """A class-coloured square on a grey background, jittered per image."""
    rng = np.random.default_rng([sorted(CLASSES).index(cls), i])
    img = np.full((size, size, 3), 90, np.uint8)
    lo = int(rng.integers(4, 12))
    img[lo:size - lo, lo:size - lo] = CLASSES[cls][1]
    noise = rng.integers(-12, 12, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, ext: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=FORMATS[ext][0])
    return buf.getvalue()


# ---------------------------------------------------------------- the loopback server

class Loopback:
    """Images and failure modes on 127.0.0.1 (a free port, one thread per request, stopped at the end)."""

    def __init__(self):
        self.files: dict[str, tuple[bytes, str]] = {}
        self.counts: Counter = Counter()
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a stuck client cannot hold a handler thread

            def log_message(self, *_args):
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                with owner.lock:
                    owner.counts[self.path] += 1
                    seen = owner.counts[self.path]
                    total = sum(owner.counts.values())
                try:
                    if total > MAX_REQUESTS:
                        return self.send_error(503, "request budget spent")
                    path = self.path
                    if path.startswith("/redirect/"):
                        self.send_response(302)
                        self.send_header("Location", "/img/" + path.split("/", 2)[2])
                        self.send_header("Content-Length", "0")
                        return self.end_headers()
                    if path.startswith("/flaky/") and seen == 1:  # fails once, then works
                        return self.send_error(503, "try again later")
                    if path.startswith("/flaky3/") and seen <= 2:  # fails twice: download and retry round
                        return self.send_error(502, "bad gateway")
                    if path.startswith("/slow/"):
                        time.sleep(SLOW_S)
                    if path.startswith("/pause/"):  # slow but within the timeout
                        time.sleep(1.5)
                    name = path.split("/")[-1]
                    if name not in owner.files:
                        return self.send_error(404, "not found")
                    body, ctype = owner.files[name]
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError, socket.timeout):
                    pass  # the client gave up (the slow path): nothing to answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def add(self, name: str, body: bytes, ctype: str = "image/jpeg") -> None:
        self.files[name] = (body, ctype)

    def requests(self, suffix: str) -> int:
        with self.lock:
            return sum(n for path, n in self.counts.items() if path.endswith(suffix))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def server():
    srv = Loopback()
    yield srv
    srv.stop()


# ---------------------------------------------------------------- offline guard

NET_GUARD = """\
import os, socket
_LOCAL = {None, "127.0.0.1", "::1", "localhost", b"127.0.0.1", b"localhost"}
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo

def _deny(what):
    log = os.environ.get("TAILSTUDY_NET_GUARD_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {what}\\n")
    raise OSError(f"tailstudy test guard: no network beyond 127.0.0.1 ({what})")

def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOCAL:
        _deny(f"connect {address!r}")
    return _connect(self, address)

def getaddrinfo(host, *args, **kwargs):
    if host not in _LOCAL:
        _deny(f"resolve {host!r}")
    return _getaddrinfo(host, *args, **kwargs)

socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
"""


@pytest.fixture(scope="module")
def net_guard(tmp_path_factory):
    """While active, this process and every Python process it starts (img2dataset spawns its workers) can reach
    127.0.0.1 only; any other connection or name lookup is refused and logged."""
    root = tmp_path_factory.mktemp("netguard")
    (root / "sitecustomize.py").write_text(NET_GUARD)
    log = root / "denied.log"
    log.touch()
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "TAILSTUDY_NET_GUARD_LOG")}
    real = socket.socket.connect, socket.getaddrinfo
    scope: dict = {}
    exec(NET_GUARD, scope)  # the same guard in this process

    @contextlib.contextmanager
    def active():
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), saved["PYTHONPATH"]]))
        os.environ["TAILSTUDY_NET_GUARD_LOG"] = str(log)
        socket.socket.connect, socket.getaddrinfo = scope["connect"], scope["getaddrinfo"]
        try:
            yield log
        finally:
            socket.socket.connect, socket.getaddrinfo = real
            for key, value in saved.items():
                os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)

    return active, log


def eval_folder(root: Path, per_class: int = 3) -> Path:
    """ImageNet-style: one folder per class, by wnid (one by class name, to exercise both)."""
    for cls, (wnid, _) in CLASSES.items():
        folder = root / (cls if cls == "lemon" else wnid)
        folder.mkdir(parents=True)
        for j in range(per_class):
            (folder / f"{wnid}_val_{j}.JPEG").write_bytes(encode(picture(cls, 1000 + j), "jpg"))
    return root


# ---------------------------------------------------------------- the loopback corpus, built once

N_GOOD = 5  # per class


@pytest.fixture(scope="module")
def loopback(server, net_guard, tmp_path_factory):
    root = tmp_path_factory.mktemp("loopback")
    rows = []
    exts = list(FORMATS)
    for c, cls in enumerate(sorted(CLASSES)):
        for i in range(N_GOOD):
            ext = exts[(c + i) % 3]
            name = f"{cls}-{i}.{ext}"
            server.add(name, encode(picture(cls, i), ext), FORMATS[ext][1])
            route = "redirect" if i == 1 else "img"
            rows.append({"uid": f"{cls}-{i}", "url": f"{server.base}/{route}/{name}", "text": f"a photo of a {cls}",
                         "license": "cc-by"})
    server.add("flaky-goldfish.png", encode(picture("goldfish", 99), "png"), "image/png")
    server.add("slow-lemon.png", encode(picture("lemon", 99), "png"), "image/png")
    server.add("corrupt.jpg", b"\xff\xd8\xff this is not a jpeg at all", "image/jpeg")
    rows += [
        {"uid": "flaky", "url": f"{server.base}/flaky/flaky-goldfish.png", "text": "my goldfish", "license": "cc0"},
        {"uid": "flaky3", "url": f"{server.base}/flaky3/flaky-goldfish.png", "text": "a goldfish", "license": "cc0"},
        {"uid": "slow", "url": f"{server.base}/slow/slow-lemon.png", "text": "a lemon", "license": "cc0"},
        {"uid": "corrupt", "url": f"{server.base}/img/corrupt.jpg", "text": "an ostrich", "license": "cc0"},
        {"uid": "missing", "url": f"{server.base}/img/missing.jpg", "text": "broccoli", "license": "cc0"},
        {"uid": "ftp", "url": "ftp://127.0.0.1/lemon.jpg", "text": "a lemon", "license": "cc0"},
        {"uid": "local", "url": "file:///etc/hostname", "text": "a lemon", "license": "cc0"},
    ]
    urls = root / "urls.parquet"
    pq.write_table(pa.Table.from_pylist(rows), urls)
    spec = root / "loopback.yaml"
    spec.write_text(f"""\
name: loopback
corpus: {{source: urls, path: {urls}, preset: datacomp, image_size: 32, shard_size: 10, threads: 4, timeout: 2,
         retry_rounds: 1, retry_wait: 0, targets: eval}}
evaluate: {{folder: {eval_folder(root / 'eval')}, per_class: 3}}
base: {{imbalance: natural, caption: full}}
learners: [sl, clip]
train: {{arch: tiny, epochs: 1, batch_size: 16}}
seeds: [0]
""")
    ws = Workspace(root / "ws")
    plan = plan_study(load_spec(spec))
    with net_guard[0]():  # the real img2dataset download, allowed nowhere but 127.0.0.1
        result = build_corpus(ws, plan)
    catalog.refresh(ws)
    return {"root": root, "spec": spec, "ws": ws, "plan": plan, "result": result, "rows": rows}


def downloads(ws: Workspace, key: str) -> dict[str, dict]:
    frame = catalog.query(ws, f"select * from downloads where corpus_key = '{key}'")
    return {r["sample_id"]: r for r in frame.to_dict("records")}


def test_download_records_successes_and_error_kinds(loopback, server):
    ws, result = loopback["ws"], loopback["result"]
    assert result.status == "ran"
    status = downloads(ws, result.key)
    assert len(status) == len(loopback["rows"])
    good = [r["uid"] for r in loopback["rows"] if r["uid"].split("-")[0] in CLASSES]
    assert all(status[uid]["status"] == "success" and status[uid]["bytes"] > 0 for uid in good)  # jpg, png, webp
    assert status[f"{sorted(CLASSES)[0]}-1"]["status"] == "success"  # reached through a redirect
    kinds = {uid: status[uid]["error_kind"] for uid in ("missing", "corrupt", "slow", "ftp", "local")}
    assert kinds == {"missing": "http_404", "corrupt": "decode", "slow": "timeout", "ftp": "invalid_url",
                     "local": "invalid_url"}
    assert status["corrupt"]["status"] == "failed_to_resize"
    assert server.requests("/lemon.jpg") == 0 and server.requests("hostname") == 0  # never fetched
    summary = catalog.query(ws, f"select avg((status = 'success')::int) as rate, sum(bytes) as bytes from downloads "
                                f"where corpus_key = '{result.key}'").iloc[0]
    assert summary["rate"] == pytest.approx((len(good) + 1) / len(loopback["rows"]))
    assert summary["bytes"] > 0
    # the corpus: successes only, at the chosen size, extra input columns kept
    corpus = result.path
    captions = pq.read_table(corpus / "captions.parquet")
    assert captions.column_names == ["sample_id", "caption", "title", "tags", "description", "url", "shard", "key"]
    assert captions.num_rows == len(good) + 1
    from tailstudy.corpus.shards import iter_shard

    images = {k: m for s in set(captions.column("shard").to_pylist()) for k, m in iter_shard(corpus / "shards" / s)}
    for key in captions.column("key").to_pylist():
        assert Image.open(io.BytesIO(images[key]["jpg"])).size == (32, 32)
    assert set(pq.read_table(corpus / "metadata.parquet").column_names) == {"sample_id", "license"}
    evalset = pq.read_table(corpus / "eval.parquet")
    assert evalset.num_rows == 3 * len(CLASSES)
    assert target_concepts(ws, loopback["plan"]) == sorted(set(evalset.column("concept_id").to_pylist()))


def test_a_later_refetch_recovers_what_still_failed_and_reuses_finished_shards(loopback, server, net_guard):
    cfg = loopback["plan"].spec.corpus
    first = loopback["ws"].artifact("corpus", loopback["result"].manifest()["source_key"])
    before = dict(server.counts)
    with net_guard[0]():
        again = build_source(loopback["ws"], cfg.model_copy(update={"refetch": 1}))
    assert again.key != first.key and again.status == "ran"
    fetched = {path: n - before.get(path, 0) for path, n in server.counts.items() if n != before.get(path, 0)}
    assert fetched == {"/flaky3/flaky-goldfish.png": 1, "/slow/slow-lemon.png": 1}  # only transient failures
    status = {r["sample_id"]: r for r in pq.read_table(again.path / "downloads.parquet").to_pylist()}
    assert status["flaky3"]["status"] == "success" and status["flaky3"]["attempts"] == 3
    assert status["slow"]["attempts"] == 3 and status["missing"]["attempts"] == 1
    ids = pq.read_table(again.path / "captions.parquet").column("sample_id").to_pylist()
    assert len(ids) == len(set(ids)) == pq.read_metadata(first.path / "captions.parquet").num_rows + 1


def test_targets_default_to_the_whole_vocabulary_and_the_download_is_reused(loopback, server):
    before = sum(server.counts.values())
    text = loopback["spec"].read_text().replace(", targets: eval", "")
    plan = plan_study(parse_spec(yaml.safe_load(text)))
    assert plan.key("corpus") != loopback["plan"].key("corpus")
    built = run_local(loopback["ws"], [plan.node("corpus")])
    result = built["corpus"]
    assert result.manifest()["source_key"] == loopback["result"].manifest()["source_key"]
    assert built["source"].status == "reused" and sum(server.counts.values()) == before
    assert len(target_concepts(loopback["ws"], plan)) == 1000  # the whole vocabulary unless the spec says otherwise


def test_retry_recovers_transient_failures_without_duplicates(loopback, server):
    ws, result = loopback["ws"], loopback["result"]
    status = downloads(ws, result.key)
    assert status["flaky"]["status"] == "success" and status["flaky"]["attempts"] == 2
    assert server.requests("/flaky/flaky-goldfish.png") == 2
    assert status["slow"]["attempts"] == 2  # a timeout is transient: retried once, failed again
    assert status["flaky3"]["attempts"] == 2 and status["flaky3"]["error_kind"] == "http_502"
    assert status["missing"]["attempts"] == 1 and server.requests("/img/missing.jpg") == 1  # a 404 is not retried
    assert status["corrupt"]["attempts"] == 1
    ids = pq.read_table(result.path / "captions.parquet").column("sample_id").to_pylist()
    assert len(ids) == len(set(ids)) and "flaky" in ids
    keys = catalog.query(ws, "select key from captions where corpus_key = "
                             f"'{loopback['plan'].key('corpus')}'")["key"].tolist()
    assert len(keys) == len(set(keys))
    manifest = result.manifest()
    assert manifest["status"]["retried_ok"] >= 1  # the flaky one (a starved machine may add more)
    assert not any(p.name.startswith((".tmp-", ".work-")) for p in (ws.root / "corpus").iterdir())


@pytest.mark.slow
def test_study_runs_end_to_end_on_the_loopback_corpus(loopback):
    from tailstudy.flows.runner import run_study

    summary = run_study(str(loopback["spec"]), str(loopback["ws"].root))
    status = {r["stage"]: r["status"] for r in summary["stages"]}
    assert status["corpus"] == "reused"
    assert status["match"] == status["curate"] == status["train"] == status["evaluate"] == "ran"
    assert {r["learner"] for r in summary["results"]} == {"sl", "clip"}
    per_class = catalog.query(loopback["ws"], "select name, n_eval from per_class where n_eval > 0")
    assert set(per_class["name"]) == set(CLASSES) and set(per_class["n_eval"]) == {3}
    freq = catalog.query(loopback["ws"], "select name, count from concept_freq where count > 0")
    assert set(freq["name"]) == set(CLASSES)


# ---------------------------------------------------------------- resume after a kill

def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`tailstudy ARGS` through the console script's entry point, in this process (no interpreter start-up)."""
    import sys

    from tailstudy.flows.cli import main

    argv, sys.argv = sys.argv, ["tailstudy", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_interrupted_ingest_resumes_without_refetching_finished_shards(server, net_guard, tmp_path, capsys):
    lines = ["url,caption"]
    for i in range(8):  # shard 0: fast; shard 1: each response takes 1.5 s, so the kill lands inside it
        name = f"resume-{i}.png"
        server.add(name, encode(picture("ostrich", 200 + i), "png"), "image/png")
        lines.append(f"{server.base}/{'img' if i < 4 else 'pause'}/{name},an ostrich {i}")
    urls = tmp_path / "resume.csv"
    urls.write_text("\n".join(lines) + "\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    args = [str(VENV_BIN / "tailstudy"), "ingest", str(urls), "--url-col", "url", "--caption-col", "caption",
            "--shard-size", "4", "--threads", "2", "--timeout", "5", "--image-size", "32", "--retry-rounds", "0",
            "-w", str(ws)]
    guard = net_guard[0]()
    guard.__enter__()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 90
        while not list(ws.glob("corpus/.work-*/download/00000_stats.json")):
            assert proc.poll() is None, "ingest ended before it could be interrupted"
            assert time.time() < deadline, "shard 0 never finished"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and the processes img2dataset spawned
        proc.wait(10)
    assert not list(ws.glob("corpus/*/manifest.json"))  # no corpus artifact from the killed run
    assert [server.requests(f"/resume-{i}.png") for i in range(4)] == [1, 1, 1, 1]
    try:
        code, out, err = run_cli(capsys, *args[1:])  # the same command again, in this process
    finally:
        guard.__exit__(None, None, None)
    assert code == 0, err[-2000:]
    assert "ran corpus" in out and "8 of 8 images" in out
    assert [server.requests(f"/resume-{i}.png") for i in range(4)] == [1, 1, 1, 1]  # finished shard not refetched
    assert all(server.requests(f"/resume-{i}.png") >= 1 for i in range(4, 8))
    assert len(list(ws.glob("corpus/*/manifest.json"))) == 1


# ---------------------------------------------------------------- bad inputs: one line, nothing half-written

def _bad_url_list(tmp_path: Path, case: str) -> UrlsCorpusSpec:
    path = tmp_path / ("list.parquet" if case == "duplicate ids" else "list.csv")
    if case == "missing url column":
        path.write_text("link,caption\nhttp://127.0.0.1:9/a.jpg,a lemon\n")
    elif case == "empty file":
        path.write_text("")
    elif case == "header only":
        path.write_text("url,caption\n")
    elif case == "non-http URLs":
        path.write_text("url,caption\nftp://127.0.0.1/a.jpg,a lemon\nfile:///etc/passwd,a lemon\n")
    elif case == "duplicate ids":
        pq.write_table(pa.table({"uid": ["a", "b", "a"], "url": ["http://127.0.0.1:9/x.jpg"] * 3,
                                 "text": ["a lemon"] * 3}), path)
    return UrlsCorpusSpec(source="urls", path=str(path), preset="datacomp" if case == "duplicate ids" else None)


@pytest.mark.parametrize("case, fragments", [
    ("missing url column", ["list.csv", "no column 'url' for url_col", "link"]),
    ("empty file", ["list.csv", "empty file"]),
    ("header only", ["list.csv", "no rows"]),
    ("non-http URLs", ["list.csv", "no downloadable URL in column 'url'", "row 1", "not an http(s) URL"]),
    ("duplicate ids", ["list.parquet", "duplicate id 'a' in column 'uid'", "rows 1 and 3"]),
])
def test_bad_url_lists_fail_in_one_line_and_write_nothing(tmp_path, case, fragments):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError) as info:
        build_source(ws, _bad_url_list(tmp_path, case))
    message = str(info.value)
    assert "\n" not in message
    assert all(f in message for f in fragments), message
    assert not [p for p in ws.root.rglob("*") if p.is_file()]  # no artifact, no temp, no work files


def test_a_shard_that_is_not_a_tar_is_named(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "a.tar", "w") as tar:
        data = encode(picture("lemon", 0), "png")
        info = tarfile.TarInfo("k0.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (shards / "b.tar").write_bytes(b"this is not a tar archive" * 40)
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError, match=r"b\.tar: not a tar archive \(shard 2 of 2\)"):
        build_source(ws, WebdatasetCorpusSpec(source="webdataset", path=str(shards)))
    assert not [p for p in ws.root.rglob("*") if p.is_file()]


def test_cli_bad_input_is_one_line_without_traceback(tmp_path, capsys):
    path = tmp_path / "list.csv"
    path.write_text("link,caption\nhttp://127.0.0.1:9/a.jpg,a lemon\n")
    (tmp_path / "ws").mkdir()
    code, out, err = run_cli(capsys, "ingest", str(path), "-w", str(tmp_path / "ws"))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no column 'url'" in lines[0] and str(path) in lines[0]
    assert "Traceback" not in err


# ---------------------------------------------------------------- existing shards and image folders

def test_webdataset_source_reads_existing_shards(loopback, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    source_dir = loopback["ws"].root / "corpus" / loopback["result"].manifest()["source_key"] / "shards"
    for tar in sorted(source_dir.glob("*.tar")):  # img2dataset's own output: jpg + txt + json per sample
        (shards / tar.name).write_bytes(tar.read_bytes())
    with tarfile.open(shards / "extra.tar", "w") as tar:
        for name, data in (("odd.txt", b"a caption without an image"), ("bad.webp", b"RIFF not really webp"),
                           ("ok.webp", encode(picture("lemon", 7), "webp")),
                           ("ok.json", json.dumps({"title": "lemon", "tags": ["fruit", "yellow"]}).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ws = Workspace(tmp_path / "ws")
    result = build_source(ws, WebdatasetCorpusSpec(source="webdataset", path=str(shards)))
    captions = pq.read_table(result.path / "captions.parquet").to_pylist()
    n_img2dataset = pq.read_metadata(loopback["result"].path / "captions.parquet").num_rows
    assert len(captions) == n_img2dataset + 1
    ok = next(r for r in captions if r["sample_id"] == "ok")
    assert (ok["title"], ok["tags"], ok["caption"]) == ("lemon", "fruit, yellow", "lemon. fruit, yellow")
    assert all(r["caption"].startswith(("a photo of a", "my goldfish")) for r in captions if r["sample_id"] != "ok")
    status = {r["sample_id"]: r["status"] for r in pq.read_table(result.path / "downloads.parquet").to_pylist()}
    assert status["odd"] == "no_image" and status["bad"] == "failed_to_decode" and status["ok"] == "success"


def test_folder_source_with_eval_folder_builds_a_study_corpus(tmp_path):
    root = tmp_path / "incaps"
    meta = []
    for cls, (wnid, _) in CLASSES.items():
        (root / wnid).mkdir(parents=True)
        for i in range(2):
            name = f"{wnid}_{i}.JPEG"
            (root / wnid / name).write_bytes(encode(picture(cls, i), "jpg"))
            meta.append({"filename": name, "title": f"my {cls}", "tags": ["photo", cls], "description": "outdoors",
                         "wnid": wnid})
    (root / CLASSES["lemon"][0] / "nometa.JPEG").write_bytes(encode(picture("lemon", 5), "jpg"))
    meta.append({"filename": "gone.JPEG", "title": "lost", "tags": [], "description": ""})
    (root / "imagenet_captions.json").write_text(json.dumps(meta))
    spec = parse_spec({"name": "incaps", "corpus": {"source": "folder", "path": str(root), "targets": "eval"},
                       "evaluate": {"folder": str(eval_folder(tmp_path / "eval")), "per_class": 2}})
    ws = Workspace(tmp_path / "ws")
    plan = plan_study(spec)
    result = build_corpus(ws, plan)
    captions = pq.read_table(result.path / "captions.parquet").to_pylist()
    assert len(captions) == 8
    first = captions[0]
    assert first["title"].startswith("my ") and first["description"] == "outdoors"
    assert first["caption"] == f"{first['title']}. {first['tags']}. outdoors"
    status = {r["sample_id"]: r["status"] for r in pq.read_table(result.path / "downloads.parquet").to_pylist()}
    assert status[f"{CLASSES['lemon'][0]}/nometa"] == "no_metadata" and status["gone"] == "missing_file"
    truth = pq.read_table(result.path / "truth.parquet").column("concept_id").to_pylist()
    assert sorted(set(truth)) == sorted(plan.node("vocab").config["vocab"].concepts[i].concept_id for i in (1, 9, 937, 951))
    assert target_concepts(ws, plan) == [1, 9, 937, 951]  # targets: eval -> the eval folder's classes
    assert pq.read_table(result.path / "eval.parquet").num_rows == 8


# ---------------------------------------------------------------- spec

def test_synthetic_corpus_config_is_unchanged_and_sources_are_validated(tmp_path):
    spec = parse_spec({"name": "x"})
    assert corpus_config(spec) == {"corpus": spec.corpus.model_dump(mode="json"), "eval_per_class": 30}
    assert "folder" not in spec.evaluate.model_dump()  # evaluate keys of existing studies do not move
    with pytest.raises(SpecError, match=r"corpus\.url_column: unknown key"):
        parse_spec({"name": "x", "corpus": {"source": "urls", "path": "a.csv", "url_column": "u"}})
    with pytest.raises(SpecError, match=r"corpus\.source: Input should be"):
        parse_spec({"name": "x", "corpus": {"source": "ftp"}})
    urls = tmp_path / "u.csv"
    urls.write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,a\n")
    with pytest.raises(SpecError, match="evaluate.folder: a urls corpus needs an ImageNet-style evaluation folder"):
        plan_study(parse_spec({"name": "x", "corpus": {"source": "urls", "path": str(urls)}}))
    with pytest.raises(SpecError, match="evaluate.folder: only for"):
        plan_study(parse_spec({"name": "x", "evaluate": {"folder": str(tmp_path)}}))
    with pytest.raises(TailstudyError, match="no such URL list"):
        plan_study(parse_spec({"name": "x", "corpus": {"source": "urls", "path": str(tmp_path / "nope.csv")},
                               "evaluate": {"folder": str(tmp_path)}}))
    assert FolderCorpusSpec(source="folder", path="p").targets == "vocabulary"


def test_ingest_contacted_nothing_but_loopback(net_guard, loopback, tmp_path):
    active, log = net_guard
    assert log.read_text() == ""  # img2dataset, albumentations, wandb: no update check, no telemetry, no hub
    with active():  # and the guard does reach the processes a download starts
        probe = subprocess.run([str(VENV_BIN / "python"), "-c", "import urllib.request as u; u.urlopen("
                                "'http://example.invalid/x', timeout=2)"], capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "example.invalid" in log.read_text()


@pytest.mark.parametrize("status, message, kind, transient", [
    ("failed_to_download", "HTTP Error 404: Not Found", "http_404", False),
    ("failed_to_download", "HTTP Error 503: Service Unavailable", "http_503", True),
    ("failed_to_download", "HTTP Error 429: Too Many Requests", "http_429", True),
    ("failed_to_download", "<urlopen error timed out>", "timeout", True),
    ("failed_to_download", "<urlopen error [Errno 111] Connection refused>", "connection", True),
    ("failed_to_download", "<urlopen error [Errno -2] Name or service not known>", "dns", True),
    ("failed_to_download", "Use of image disallowed by X-Robots-Tag directive", "disallowed", False),
    ("failed_to_resize", "Image decoding error", "decode", False),
    ("failed_to_resize", "image too small", "too_small", False),
    ("invalid_url", "not an http(s) URL: ftp://x", "invalid_url", False),
    ("success", None, None, False),
])
def test_error_kinds_and_what_the_retry_step_fetches_again(status, message, kind, transient):
    from tailstudy.corpus.ingest import error_kind, is_transient

    assert error_kind(status, message) == kind
    assert is_transient(status, kind) is transient
