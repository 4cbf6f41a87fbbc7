"""Reading real corpora's inputs: URL lists (Parquet / CSV / TSV / JSONL), webdataset shards, image folders with
caption metadata, and ImageNet-style evaluation folders.

Everything here validates before anything is written: a bad input is one ``InputError`` line naming the file, the
column and the row; a bad *sample* (a non-http URL, an undecodable image) is a per-sample status, recorded.
"""
from __future__ import annotations

import csv
import glob as globlib
import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from tailstudy.corpus.shards import IMAGE_EXTS
from tailstudy.errors import InputError
from tailstudy.store import file_digest
from tailstudy.tabular import MAX_BLOCK, check_distinct, decoded, read_table

TEXT_FIELDS = ("title", "tags", "description")
# columns every corpus's per-sample status table (downloads.parquet, the `downloads` view) has, in this order
STATUS_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("url", pa.string()), ("status", pa.string()), ("error_kind", pa.string()),
    ("error_message", pa.string()), ("attempts", pa.int32()), ("bytes", pa.int64()), ("width", pa.int32()),
    ("height", pa.int32()), ("original_width", pa.int32()), ("original_height", pa.int32()), ("sha256", pa.string()),
    ("shard", pa.string()), ("key", pa.string()),
])
CAPTION_COLUMNS = ["sample_id", "caption", "title", "tags", "description", "url", "shard", "key"]
IMAGE_SUFFIXES = tuple(f".{e}" for e in IMAGE_EXTS)


# ---------------------------------------------------------------- fingerprints (what a corpus key hashes)

def file_fingerprint(path: Path) -> str:
    return file_digest(path)[:32]


def tree_fingerprint(paths: list[Path], root: Optional[Path] = None) -> str:
    """Digest of a file listing: relative name, size and modification time (content hashing of image trees is too
    slow to do on every plan; a changed, added or removed file changes the digest)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        st = path.stat()
        name = path.relative_to(root).as_posix() if root else path.name
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# ---------------------------------------------------------------- URL lists

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl",
           ".json": "jsonl", ".ndjson": "jsonl"}


def list_format(path: Path, fmt: Optional[str]) -> str:
    if fmt:
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".zst"):
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in FORMATS:
        return FORMATS[suffixes[-1]]
    raise InputError(f"{path}: unknown URL-list format (name it .parquet, .csv, .tsv or .jsonl, or set format:)")


@dataclass
class UrlList:
    """A URL list normalised to one row per sample."""

    path: Path
    table: pa.Table  # sample_id, url, caption, title, tags, description (strings; url may be invalid)
    extra: pa.Table  # sample_id + every other input column, as given
    invalid: dict[int, str]  # row -> why its URL is not downloadable

    @property
    def valid_rows(self) -> list[int]:
        return [i for i in range(self.table.num_rows) if i not in self.invalid]


def _as_text(column: pa.ChunkedArray) -> list:
    column = decoded(column)  # a dictionary-encoded column (a pandas category) as its values
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return [", ".join(str(v) for v in item) if item is not None else None for item in column.to_pylist()]
    return pc.cast(column, pa.string()).to_pylist()


def url_problem(url) -> Optional[str]:
    """Why a URL must not be fetched (None when it is a plain http(s) URL)."""
    if url is None or not str(url).strip():
        return "empty URL"
    text = str(url).strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return f"malformed URL: {text[:80]}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"not an http(s) URL: {text[:80]}"
    if not parts.hostname:
        return f"URL without a host: {text[:80]}"
    return None


def _read_list_table(path: Path, cfg, url_col: str, caption_col: str) -> pa.Table:
    """The file as a table with at least one row; an unreadable file is one InputError line."""
    if not path.is_file():
        raise InputError(f"{path}: no such URL list")
    fmt = list_format(path, cfg.format)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (no header, no rows)")
    try:
        table = read_table(path, fmt, cfg.header, [url_col, caption_col])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: cannot read as {fmt}: {first}") from None
    if table.num_rows == 0:
        raise InputError(f"{path}: no rows")
    return table


def _check_columns(path: Path, cfg, names: list[str], cols: dict[str, Optional[str]]) -> Optional[str]:
    """Every configured column exists; returns the id column (a preset's one only where the file has it)."""
    for role in ("url_col", "caption_col"):
        if cols[role] not in names:
            raise InputError(f"{path}: no column {cols[role]!r} for {role} (columns: {', '.join(names[:12])}"
                             f"{', ...' if len(names) > 12 else ''})")
    id_col = cols["id_col"]
    preset_id = cfg.preset and not cfg.id_col
    if id_col and id_col not in names:
        if not preset_id:
            raise InputError(f"{path}: no column {id_col!r} for id_col (columns: {', '.join(names[:12])})")
        id_col = None
    for role in ("title_col", "tags_col", "description_col"):
        col = getattr(cfg, role)
        if col and col not in names:
            raise InputError(f"{path}: no column {col!r} for {role} (columns: {', '.join(names[:12])})")
    return id_col


def _sample_ids(path: Path, table: pa.Table, id_col: Optional[str]) -> list[str]:
    """The id column's values (each present and unique), else the row number (r000000001, ...)."""
    if not id_col:
        width = max(9, len(str(table.num_rows)))
        return [f"r{row:0{width}d}" for row in range(table.num_rows)]
    ids = _as_text(table.column(id_col))
    seen: dict[str, int] = {}
    for row, value in enumerate(ids):
        if value is None or value == "":
            raise InputError(f"{path}: empty id in column {id_col!r} (row {row + 1})")
        if value in seen:
            raise InputError(f"{path}: duplicate id {value!r} in column {id_col!r} (rows {seen[value] + 1} and "
                             f"{row + 1})")
        seen[value] = row
    return ids


def _extra_columns(table: pa.Table, used: set, sample_ids: pa.ChunkedArray) -> pa.Table:
    """The columns we do not read, by sample id (metadata.parquet); an input `sample_id` becomes input_sample_id."""
    extra_cols = {}
    for name in table.column_names:
        if name in used:
            continue
        extra_cols[name if name != "sample_id" else f"input_{name}"] = table.column(name)
    return pa.table({"sample_id": sample_ids, **extra_cols})


def read_url_list(cfg) -> UrlList:
    """Read and validate a `source: urls` list (cfg: UrlsCorpusSpec)."""
    path = Path(cfg.path)
    cols = cfg.columns()
    url_col, caption_col = cols["url_col"], cols["caption_col"]
    table = _read_list_table(path, cfg, url_col, caption_col)
    id_col = _check_columns(path, cfg, table.column_names, cols)
    check_distinct(path, table.column_names, [url_col, caption_col, id_col,
                                              *(getattr(cfg, f"{field}_col") for field in TEXT_FIELDS)])
    n = table.num_rows
    ids = _sample_ids(path, table, id_col)
    urls = _as_text(table.column(url_col))
    captions = [c if c is not None else "" for c in _as_text(table.column(caption_col))]
    text_cols = {field: getattr(cfg, f"{field}_col") for field in TEXT_FIELDS}
    fields = {field: _as_text(table.column(col)) if col else [None] * n for field, col in text_cols.items()}
    invalid = {row: problem for row, url in enumerate(urls) if (problem := url_problem(url))}
    if len(invalid) == n:
        row, why = next(iter(invalid.items()))
        raise InputError(f"{path}: no downloadable URL in column {url_col!r} (row {row + 1}: {why})")
    normal = pa.table({
        "sample_id": pa.array(ids, pa.string()),
        "url": pa.array([u.strip() if isinstance(u, str) else u for u in urls], pa.string()),
        "caption": pa.array(captions, pa.string()),
        **{f: pa.array(v, pa.string()) for f, v in fields.items()},
    })
    used = {url_col, caption_col, id_col, *text_cols.values()}
    return UrlList(path, normal, _extra_columns(table, used, normal.column("sample_id")), invalid)


# ---------------------------------------------------------------- webdataset shards

def shard_paths(spec_path: str) -> list[Path]:
    """A directory (its *.tar), one .tar file, or a glob pattern -> the shards, sorted."""
    path = Path(spec_path)
    if path.is_dir():
        found = sorted(path.glob("*.tar"))
    elif path.is_file():
        found = [path]
    elif any(ch in spec_path for ch in "*?["):
        found = sorted(Path(p) for p in globlib.glob(spec_path) if Path(p).is_file())
    else:
        raise InputError(f"{path}: no such shard, directory or pattern")
    if not found:
        raise InputError(f"{path}: no .tar shards there")
    return found


def check_tar(path: Path, index: int, total: int) -> None:
    if not tarfile.is_tarfile(path):
        raise InputError(f"{path}: not a tar archive (shard {index + 1} of {total})")


def iter_tar_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) per sample, streaming: a sample's members are adjacent (the webdataset convention); a key
    that comes back later is yielded again, for the caller's duplicate check to name."""
    current: Optional[str] = None
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r") as tar:
            for info in tar:
                base = os.path.basename(info.name)
                if not info.isfile() or base.startswith("."):
                    continue
                key, _, ext = base.partition(".")
                if key != current and current is not None:
                    yield current, members
                    members = {}
                current = key
                members[ext.lower()] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        why = str(err).splitlines()[0] if str(err) else "truncated"
        raise InputError(f"{path}: broken tar archive: {why}") from None
    if current is not None:
        yield current, members


def sample_fields(members: dict[str, bytes]) -> dict[str, Optional[str]]:
    """Caption, title, tags, description and url of a webdataset sample (txt and/or json)."""
    meta: dict = {}
    if "json" in members:
        try:
            loaded = json.loads(members["json"].decode("utf-8"))
            meta = loaded if isinstance(loaded, dict) else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            meta = {}
    out: dict[str, Optional[str]] = {}
    for field in TEXT_FIELDS:
        value = meta.get(field)
        out[field] = ", ".join(map(str, value)) if isinstance(value, list) else (str(value) if value else None)
    caption = None
    if "txt" in members:
        caption = members["txt"].decode("utf-8", errors="replace").strip()
    if not caption:
        caption = next((str(meta[k]) for k in ("caption", "text", "TEXT") if meta.get(k)), None)
    if not caption:
        caption = full_caption(out)
    out["caption"] = caption or ""
    out["url"] = next((str(meta[k]) for k in ("url", "URL") if meta.get(k)), None)
    return out


def full_caption(fields: dict) -> str:
    return ". ".join(str(fields[f]) for f in TEXT_FIELDS if fields.get(f))


def image_member(members: dict[str, bytes]) -> Optional[str]:
    return next((e for e in IMAGE_EXTS if e in members), None)


def decode_problem(data: bytes) -> Optional[str]:
    """None when the bytes decode as an image, else why not."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
        return None
    except Exception as err:  # PIL raises many types for broken files
        why = re.sub(r" object at 0x[0-9a-fA-F]+", "", str(err).splitlines()[0]) if str(err) else "undecodable"
        return f"{type(err).__name__}: {why}"[:200]  # no memory address: the status table is deterministic


# ---------------------------------------------------------------- image folders

def read_folder_metadata(path: Path) -> dict[str, dict]:
    """filename (relative path or base name) -> {title, tags, description, caption?, url?}."""
    if not path.is_file():
        raise InputError(f"{path}: no such metadata file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty metadata file")
    suffix = path.suffix.lower()
    rows: list[dict]
    try:
        if suffix in (".tsv", ".csv"):
            csv.field_size_limit(max(csv.field_size_limit(), MAX_BLOCK))  # long captions (the default is 128 kB)
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
                check_distinct(path, list(reader.fieldnames or []), list(reader.fieldnames or []))
                rows = list(reader)
        elif suffix in (".jsonl", ".ndjson"):
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):  # {filename: {...}}
                rows = [{"filename": k, **(v if isinstance(v, dict) else {"caption": v})} for k, v in data.items()]
            else:
                rows = data
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, csv.Error) as err:
        raise InputError(f"{path}: cannot read metadata: {str(err).splitlines()[0]}") from None
    if not isinstance(rows, list) or not rows:
        raise InputError(f"{path}: no metadata rows")
    out: dict[str, dict] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise InputError(f"{path}: row {i + 1} is not a mapping")
        name = next((row[k] for k in ("filename", "file", "path", "image", "file_name") if row.get(k)), None)
        if not name:
            raise InputError(f"{path}: row {i + 1} has no filename (columns filename, file, path or image)")
        name = str(name).replace("\\", "/")
        if name in out:
            raise InputError(f"{path}: duplicate filename {name!r} (row {i + 1})")
        out[name] = row
    return out


def default_metadata(root: Path) -> Optional[Path]:
    for name in ("metadata.json", "metadata.jsonl", "metadata.tsv", "metadata.csv", "imagenet_captions.json"):
        if (root / name).is_file():
            return root / name
    return None


def metadata_fields(row: dict) -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {}
    for field in TEXT_FIELDS:
        value = row.get(field)
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        out[field] = str(value).strip() if value not in (None, "") else None
    caption = row.get("caption") or row.get("text")
    out["caption"] = str(caption) if caption else full_caption(out)
    out["url"] = str(row["url"]) if row.get("url") else None
    return out


# ---------------------------------------------------------------- class folders -> concepts

def class_resolver(vocab):
    """Folder or class name -> concept id: by key (an ImageNet wnid), then by name or synonym (case, '_' and ' '
    insensitive)."""
    by_key = {c.key.lower(): c.concept_id for c in vocab.concepts}
    by_name: dict[str, int] = {}
    for c in vocab.concepts:
        by_name.setdefault(c.name.lower(), c.concept_id)
    for c in vocab.concepts:
        for s in c.synonyms:
            by_name.setdefault(s.lower(), c.concept_id)

    def resolve(name: str) -> Optional[int]:
        text = name.strip().lower()
        if text in by_key:
            return by_key[text]
        return by_name.get(text.replace("_", " "), by_name.get(text))

    return resolve


def class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
