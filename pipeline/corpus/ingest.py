"""`source: urls`: download a URL list with img2dataset (its Python API) into webdataset shards, retry the transient
failures of finished shards, and assemble the corpus tables.

Work happens in a resumable directory (``WORKSPACE/corpus/.work-<key>/``):

- ``input.parquet``: the valid rows (url, caption, sample_id), written once;
- ``download/``: img2dataset's output. A shard is finished when its ``NNNNN_stats.json`` exists; img2dataset's
  incremental mode skips finished shards, so an interrupted ingest resumes where it stopped;
- the retry step: img2dataset never re-fetches the failed URLs of a finished shard. Each retry round collects the
  samples whose every attempt so far failed *transiently* (timeouts, refused or reset connections, HTTP 408/429/5xx)
  and downloads just those, as new shards appended to ``download/`` (img2dataset's ``extend`` mode gives them new shard
  ids, hence keys unique across the corpus);
- ``state.json``: which phases are done.

Assembly picks one attempt per sample id (its success, else its latest failure), so a retried sample is never
duplicated; the shards holding successes are hard-linked into the artifact. How img2dataset itself is called (in this
process, output to a log, no signal handler, a size cap): ``download_run``.
"""
from __future__ import annotations

import json
import math
import os
import re
import tarfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tailstudy.corpus.download_run import SHARD_DIGITS, run_img2dataset
from tailstudy.corpus.readers import CAPTION_COLUMNS, STATUS_SCHEMA, UrlList
from tailstudy.corpus.sources import link_or_copy, status_summary
from tailstudy.errors import TailstudyError
from tailstudy.store import atomic_write_text, write_parquet

INGEST_VERSION = 1
DOWNLOAD_DIR = "download"
STATE_FILE = "state.json"
LOG_FILE = "img2dataset.log"


class DownloadError(TailstudyError):
    """The download could not finish (a shard crashed, or nothing at all could be fetched)."""


# ---------------------------------------------------------------- error kinds

_HTTP = re.compile(r"HTTP Error (\d{3})")


def error_kind(status: Optional[str], message: Optional[str]) -> Optional[str]:
    """A short, groupable kind for a per-sample failure: http_404, timeout, connection, dns, ssl, decode, ..."""
    if status in (None, "success"):
        return None
    text = (message or "").lower()
    if status == "invalid_url":
        return "invalid_url"
    if status == "failed_to_resize":
        if "too small" in text:
            return "too_small"
        if "too large" in text:
            return "too_large"
        return "decode"
    if status != "failed_to_download":
        return status
    match = _HTTP.search(message or "")
    if match:
        return f"http_{match.group(1)}"
    if "timed out" in text or "timeout" in text:
        return "timeout"
    if "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text:
        return "dns"
    if "ssl" in text or "certificate" in text:
        return "ssl"
    if "larger than the size cap" in text:
        return "too_large"
    if "x-robots-tag" in text:
        return "disallowed"
    if "hash mismatch" in text:
        return "hash_mismatch"
    if any(s in text for s in ("refused", "reset", "remote end closed", "connection", "broken pipe", "urlopen error",
                               "incomplete read", "incompleteread")):
        return "connection"
    return "other"


def is_transient(status: Optional[str], kind: Optional[str]) -> bool:
    """Worth fetching again: network trouble and server-side errors, not a 404 or an undecodable file."""
    if status != "failed_to_download" or kind is None:
        return False
    if kind.startswith("http_"):
        code = int(kind[5:])
        return code in (408, 425, 429) or code >= 500
    return kind in ("timeout", "connection", "dns", "other")


# ---------------------------------------------------------------- state of a download directory

def _load_state(work: Path) -> dict:
    path = work / STATE_FILE
    if path.is_file():
        return json.loads(path.read_text())
    return {"version": INGEST_VERSION, "main_done": False, "rounds_done": 0, "retried": []}


def _save_state(work: Path, state: dict) -> None:
    atomic_write_text(work / STATE_FILE, json.dumps(state, indent=1))


def finished_shards(download: Path) -> list[int]:
    """Shard ids that img2dataset finished (their stats file exists)."""
    if not download.is_dir():
        return []
    ids = []
    for path in download.glob("*_stats.json"):
        head = path.name.split("_")[0]
        if head.isdigit():
            ids.append(int(head))
    return sorted(ids)


def shard_name(shard_id: int) -> str:
    return f"{shard_id:0{SHARD_DIGITS}d}"


ATTEMPT_COLUMNS = ["sample_id", "key", "status", "error_message", "width", "height", "original_width",
                   "original_height", "sha256"]


def read_attempts(download: Path):
    """Every attempt recorded by a finished shard -> DataFrame (one row per sample per attempt, with its shard)."""
    frames = []
    for shard_id in finished_shards(download):
        table = pq.read_table(download / f"{shard_name(shard_id)}.parquet")
        cols = [c for c in ATTEMPT_COLUMNS if c in table.column_names]
        frame = table.select(cols).to_pandas()
        for c in ATTEMPT_COLUMNS:
            if c not in frame:
                frame[c] = None
        frame["shard_id"] = shard_id
        frames.append(frame[ATTEMPT_COLUMNS + ["shard_id"]])
    if not frames:
        return pd.DataFrame(columns=ATTEMPT_COLUMNS + ["shard_id"])
    return pd.concat(frames, ignore_index=True)


def final_attempts(attempts):
    """One row per sample id (the index): its earliest success, else its latest failure; plus `attempts`."""
    if attempts.empty:
        return attempts.assign(attempts=0).set_index("sample_id")
    frame = attempts.assign(_ok=attempts["status"] == "success")
    counts = frame.groupby("sample_id").size().rename("attempts")
    # successes first (earliest shard first); failures by latest shard first (= the latest attempt)
    frame["_order"] = np.where(frame["_ok"], frame["shard_id"], -frame["shard_id"])
    frame = frame.sort_values(["sample_id", "_ok", "_order"], ascending=[True, False, True])
    best = frame.groupby("sample_id", sort=False).head(1).drop(columns=["_ok", "_order"]).set_index("sample_id")
    return best.join(counts)


def pending_retries(attempts):
    """Sample ids whose attempts all failed and whose latest failure is transient."""
    final = final_attempts(attempts)
    if final.empty:
        return []
    kinds = [error_kind(s, m) for s, m in zip(final["status"], final["error_message"])]
    return [sid for sid, status, kind in zip(final.index, final["status"], kinds) if is_transient(status, kind)]


# ---------------------------------------------------------------- download + retry

def seed_from(previous: Path, work: Path) -> None:
    """Start a work directory from an earlier corpus's finished shards (hard links): only the retry rounds remain."""
    out = work / DOWNLOAD_DIR
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted((previous / DOWNLOAD_DIR).iterdir()):
        link_or_copy(path, out / path.name)
    for path in sorted((previous / "shards").glob("*.tar")):
        if path.stem.isdigit():  # img2dataset's shards, not an eval shard
            link_or_copy(path, out / path.name)
    _save_state(work, {"version": INGEST_VERSION, "main_done": True, "rounds_done": 0, "retried": [],
                       "seeded_from": previous.name})


def download(urls: UrlList, cfg, work: Path, quiet: bool = True, say: Callable[[str], None] | None = None,
             previous: Optional[Path] = None) -> dict:
    """Run (or resume) the download and the retry rounds in `work`. With `previous` (the corpus of the preceding
    `refetch` generation) the download is that corpus's and only the retry rounds run. Returns what each phase did."""
    say = say or (lambda _msg: None)
    work.mkdir(parents=True, exist_ok=True)
    out = work / DOWNLOAD_DIR
    log = work / LOG_FILE if quiet else None
    if previous is not None and not (work / STATE_FILE).is_file():
        seed_from(previous, work)
    state = _load_state(work)
    valid = urls.valid_rows
    input_path = work / "input.parquet"
    if not input_path.is_file():
        write_parquet(urls.table.take(pa.array(valid, pa.int64())).select(["url", "caption", "sample_id"]), input_path)
    expected = math.ceil(len(valid) / cfg.shard_size)
    done_before = set(finished_shards(out))
    report = {"urls": len(valid), "shards": expected, "shards_resumed": len(done_before & set(range(expected))),
              "retry_rounds": []}
    if not state["main_done"]:
        todo = expected - report["shards_resumed"]
        say(f"downloading {len(valid)} URLs in {expected} shard(s)"
            + (f", {report['shards_resumed']} already finished" if report["shards_resumed"] else "")
            + (f" (img2dataset log: {log})" if log else ""))
        if todo:
            run_img2dataset(input_path, out, cfg, "incremental", log)
        missing = sorted(set(range(expected)) - set(finished_shards(out)))
        if missing:
            raise DownloadError(f"download: {len(missing)} of {expected} shards did not finish (e.g. shard "
                                f"{shard_name(missing[0])}; see {work / LOG_FILE}); run again to resume")
        state["main_done"] = True
        _save_state(work, state)
    for round_no in range(state["rounds_done"] + 1, cfg.retry_rounds + 1):
        pending = pending_retries(read_attempts(out))
        if not pending:
            break
        say(f"retry round {round_no}: re-fetching {len(pending)} URL(s) that failed transiently")
        if cfg.retry_wait:
            time.sleep(cfg.retry_wait)
        wanted = set(pending)
        ids = urls.table.column("sample_id").to_pylist()
        rows = [i for i in valid if ids[i] in wanted]
        retry_path = work / f"retry-{round_no}.parquet"
        write_parquet(urls.table.take(pa.array(rows, pa.int64())).select(["url", "caption", "sample_id"]), retry_path)
        before = set(finished_shards(out))
        run_img2dataset(retry_path, out, cfg, "extend", log)
        new = sorted(set(finished_shards(out)) - before)
        if len(new) < math.ceil(len(rows) / cfg.shard_size):
            raise DownloadError(f"download: a retry shard did not finish (see {work / LOG_FILE}); run again to resume")
        state["rounds_done"] = round_no
        state["retried"].append({"round": round_no, "samples": len(rows), "shards": new})
        _save_state(work, state)
        report["retry_rounds"].append({"round": round_no, "samples": len(rows)})
    return report


# ---------------------------------------------------------------- assembly

def shard_member_sizes(path: Path, ext: str) -> dict[str, int]:
    """key -> size of its image member in a tar (headers only; no data is read)."""
    sizes = {}
    with tarfile.open(path, "r") as tar:
        for info in tar:
            base = os.path.basename(info.name)
            key, _, member_ext = base.partition(".")
            if info.isfile() and member_ext == ext:
                sizes[key] = info.size
    return sizes


def sample_status(urls: UrlList, cfg, download_dir: Path):
    """One row per input row (DataFrame): its final attempt, or why it has none (invalid URL, never attempted), its
    shard and image size; a success whose image is missing from its tar counts as a failure."""
    final = final_attempts(read_attempts(download_dir))
    frame = urls.table.select(["sample_id", "url"]).to_pandas().join(final, on="sample_id")
    invalid = pd.Series(False, index=frame.index)
    invalid.iloc[list(urls.invalid)] = True
    frame.loc[invalid, "status"] = "invalid_url"
    frame.loc[invalid, "error_message"] = [urls.invalid[i] for i in sorted(urls.invalid)]
    lost = frame["status"].isna()  # a valid URL no finished shard knows about: not after a complete download
    frame.loc[lost, ["status", "error_message"]] = ["failed_to_download", "not attempted"]
    frame["attempts"] = frame["attempts"].fillna(0).astype("int64")
    ok = frame["status"] == "success"
    frame["shard"] = None
    frame["bytes"] = None
    frame["shard"] = frame["shard"].astype(object)
    frame["bytes"] = frame["bytes"].astype(object)
    for shard_id, index in frame[ok].groupby("shard_id").groups.items():
        name = f"{shard_name(int(shard_id))}.tar"
        sizes = shard_member_sizes(download_dir / name, cfg.encode_format)
        frame.loc[index, "shard"] = name
        frame.loc[index, "bytes"] = [sizes.get(str(k)) for k in frame.loc[index, "key"]]
    missing = ok & frame["bytes"].isna()  # listed as a success, not in its tar: lost
    frame.loc[missing, ["status", "error_message", "shard"]] = ["failed_to_download", "image missing from its shard",
                                                                None]
    frame.loc[frame["status"] != "success", "key"] = None
    frame["error_kind"] = [error_kind(st, msg) for st, msg in zip(frame["status"], frame["error_message"])]
    return frame


def status_rows(frame) -> dict[str, list]:
    """The status frame as downloads.parquet's columns of plain Python values (None, never NaN)."""
    def column(name: str) -> list:
        return [None if v is None or (isinstance(v, float) and v != v) else v for v in frame[name].tolist()]

    rows = {name: column(name) for name in STATUS_SCHEMA.names}
    for name in ("attempts", "bytes", "width", "height", "original_width", "original_height"):
        rows[name] = [None if v is None else int(v) for v in rows[name]]
    rows["key"] = [None if v is None else str(v) for v in rows["key"]]
    return rows


def link_downloads(frame, ok, download_dir: Path, out: Path) -> None:
    """Hard-link the shards holding successes into shards/, and img2dataset's per-shard records (every attempt) into
    download/: what a later `refetch` generation starts from."""
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True)
    for shard in sorted(frame.loc[ok, "shard"].unique()):
        link_or_copy(download_dir / shard, shard_dir / shard)
    for shard_id in finished_shards(download_dir):
        for name in (f"{shard_name(shard_id)}.parquet", f"{shard_name(shard_id)}_stats.json"):
            link_or_copy(download_dir / name, out / DOWNLOAD_DIR / name)


def caption_table(urls: UrlList, frame, ok) -> pa.Table:
    """captions.parquet: the input's caption fields of every success, with where its image is."""
    picked = urls.table.take(pa.array([int(i) for i in frame.index[ok]], pa.int64()))
    captions = pa.table({
        "sample_id": picked.column("sample_id"), "caption": picked.column("caption"),
        "title": picked.column("title"), "tags": picked.column("tags"), "description": picked.column("description"),
        "url": picked.column("url"), "shard": pa.array(frame.loc[ok, "shard"].tolist(), pa.string()),
        "key": pa.array([str(k) for k in frame.loc[ok, "key"]], pa.string()),
    }).select(CAPTION_COLUMNS)
    if len(set(captions.column("sample_id").to_pylist())) != captions.num_rows:  # by construction; never ship one
        raise DownloadError(f"{urls.path}: duplicate sample ids after merging retries")
    return captions


def assemble(urls: UrlList, cfg, work: Path, out: Path, progress=None) -> dict:
    """Write captions.parquet, downloads.parquet, metadata.parquet and shards/ of a finished download into `out`."""
    download_dir = work / DOWNLOAD_DIR
    frame = sample_status(urls, cfg, download_dir)
    ok = frame["status"] == "success"
    if progress:
        progress(len(frame), len(frame))
    rows = status_rows(frame)
    if not ok.any():
        summary = status_summary(rows)
        raise DownloadError(f"{urls.path}: no image could be downloaded ("
                            + ", ".join(f"{k} x{v}" for k, v in summary["errors"].items()) + ")")
    link_downloads(frame, ok, download_dir, out)
    captions = caption_table(urls, frame, ok)
    write_parquet(captions, out / "captions.parquet")
    status = pa.table({k: pa.array(v, STATUS_SCHEMA.field(k).type) for k, v in rows.items()}, schema=STATUS_SCHEMA)
    write_parquet(status, out / "downloads.parquet")
    if urls.extra.num_columns > 1:
        write_parquet(urls.extra, out / "metadata.parquet")
    return status_summary(rows)
