"""Caption inputs of the match stage: find and check the files, cut them into shards, read a shard in batches.

Formats: Parquet, CSV, TSV (with a header row) and JSON lines (``.jsonl``/``.ndjson``); text formats may be compressed
(``.gz``, ``.bz2``, ``.zst``). A path is a file or a folder of such files (its shards, read in name order).

Ids: the given id column, else a ``sample_id`` column when the file has one, else the row number (0-based; with
several files ``<file name>:<row>``). Every problem with an input is one ``InputError`` line naming the file and column.

Duplicate keys (read only by the token index, for duplicate-aware counts): an image URL column and an image-hash column
(img2dataset's ``compute_hash`` output: ``sha256``, ``md5``, ``sha512``), the given ones or the first of
URL_COLUMNS / HASH_COLUMNS present; matching never reads them.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from tailstudy.arrays import arrow_ints
from tailstudy.errors import InputError
from tailstudy.tabular import check_distinct, check_id_type, csv_batches, decoded, is_text_type, read_growing

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl",
           ".ndjson": "jsonl"}
COMPRESSIONS = {".gz", ".bz2", ".zst"}
CAPTION_COLUMNS = ("caption", "text", "TEXT")  # tried in order when no caption column is given
ID_COLUMN = "sample_id"
URL_COLUMNS = ("url", "URL", "image_url")  # tried in order when no URL column is given
HASH_COLUMNS = ("sha256", "md5", "sha512", "image_hash")  # img2dataset's compute_hash columns first
SHARD_ROWS = 250_000  # Parquet row groups are grouped into shards of about this many rows
BATCH_ROWS = 65_536  # rows matched at a time inside a shard (bounded memory)


@dataclass(frozen=True)
class CaptionSource:
    path: Path
    name: str  # file name relative to the input folder (ids of row-number mode)
    format: str
    caption_col: str
    id_col: str | None  # None: row numbers
    row_ids_prefixed: bool  # several files: row-number ids are "<name>:<row>"
    url_col: str | None = None  # duplicate keys, for the token index only
    hash_col: str | None = None

    @property
    def dedup_columns(self) -> dict[str, str]:
        """The duplicate-key columns present: {"url": column, "image_hash": column}."""
        return {k: v for k, v in (("url", self.url_col), ("image_hash", self.hash_col)) if v is not None}


@dataclass(frozen=True)
class Shard:
    index: int
    source: CaptionSource
    row_groups: tuple[int, ...] | None  # Parquet: the row groups of this shard; text formats: the whole file
    first_row: int
    rows: int | None  # known for Parquet

    @property
    def label(self) -> str:
        return f"{self.source.name}" + (f"[row groups {self.row_groups[0]}-{self.row_groups[-1]}]"
                                        if self.row_groups else "")


def file_format(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
        fmt = FORMATS.get(suffixes[-1]) if suffixes else None
        return fmt if fmt != "parquet" else None
    return FORMATS.get(suffixes[-1]) if suffixes else None


def discover(path: str | Path) -> list[Path]:
    """The caption files of a file or folder (name order), or an InputError."""
    path = Path(path)
    if path.is_file():
        if file_format(path) is None:
            raise InputError(f"{path}: unsupported caption file (use .parquet, .csv, .tsv or .jsonl)")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and file_format(p))
        if not files:
            raise InputError(f"{path}: no caption files (.parquet, .csv, .tsv, .jsonl) in this folder")
        return files
    raise InputError(f"{path}: no such file or folder")


# ---------------------------------------------------------------- columns

def _text_stream(path: Path):
    return pa.input_stream(str(path), compression="detect")


def _csv_options(fmt: str) -> pcsv.ParseOptions:
    return pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=fmt == "csv")


def columns_of(path: Path, fmt: str) -> tuple[list[str], dict[str, pa.DataType]]:
    """Column names (and, for Parquet, types) without reading the data."""
    try:
        if fmt == "parquet":
            schema = pq.ParquetFile(path).schema_arrow
            return schema.names, {f.name: f.type for f in schema}
        if fmt in ("csv", "tsv"):
            def header(block: int) -> list[str]:
                with _text_stream(path) as stream:
                    return pcsv.open_csv(stream, parse_options=_csv_options(fmt),
                                         convert_options=pcsv.ConvertOptions(column_types={}),
                                         read_options=pcsv.ReadOptions(block_size=block)).schema.names

            return read_growing(header, 1 << 16), {}
        with _text_stream(path) as stream:  # the first record's keys; read no more than that
            parts: list[bytes] = []
            while True:
                block = stream.read(1 << 16)
                parts.append(block)
                if b"\n" in block or not block:  # a line ends here: look at what was read (a 20 MB line too)
                    lines = [line for line in b"".join(parts).split(b"\n")[: -1 if block else None] if line.strip()]
                    if lines or not block:
                        break
            if not lines:
                return [], {}
            record = json.loads(lines[0])
            if not isinstance(record, dict):
                raise InputError(f"{path}: a JSON object per line expected")
            return list(record), {}
    except InputError:
        raise
    except UnicodeDecodeError:
        raise InputError(f"{path}: not valid UTF-8 text at line {_bad_utf8_line(path)}") from None
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, ValueError) as err:
        what = {"parquet": "a readable Parquet file", "jsonl": "JSON lines"}.get(fmt, f"a readable {fmt.upper()} file")
        raise InputError(f"{path}: not {what} ({_first_line(err)})") from None


def _optional_column(path: Path, names: list[str], given: str | None, candidates: tuple[str, ...], what: str,
                     shown: str) -> str | None:
    if given is None:
        return next((c for c in candidates if c in names), None)
    if given not in names:
        raise InputError(f"{path}: no {what} column {given!r} (columns: {shown})")
    return given


def resolve_source(path: Path, name: str, caption_col: str | None, id_col: str | None,
                   prefixed: bool, url_col: str | None = None, hash_col: str | None = None) -> CaptionSource:
    fmt = file_format(path)
    names, types = columns_of(path, fmt)
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    if caption_col is None:
        found = [c for c in CAPTION_COLUMNS if c in names]
        if not found:
            raise InputError(f"{path}: no caption column (tried {', '.join(CAPTION_COLUMNS)}; columns: {shown}); "
                             "name it with --caption-col")
        caption_col = found[0]
    elif caption_col not in names:
        raise InputError(f"{path}: no caption column {caption_col!r} (columns: {shown})")
    if id_col is not None and id_col not in names:
        raise InputError(f"{path}: no id column {id_col!r} (columns: {shown})")
    resolved_id = id_col if id_col is not None else (ID_COLUMN if ID_COLUMN in names else None)
    check_id_type(path, resolved_id, types.get(resolved_id) if resolved_id else None)
    caption_type = types.get(caption_col)
    if caption_type is not None and not (is_text_type(caption_type) or pa.types.is_null(caption_type)):
        raise InputError(f"{path}: column {caption_col!r} holds {caption_type}, not text")
    url = _optional_column(path, names, url_col, URL_COLUMNS, "URL", shown)
    image_hash = _optional_column(path, names, hash_col, HASH_COLUMNS, "image-hash", shown)
    check_distinct(path, names, [caption_col, resolved_id, url, image_hash])
    return CaptionSource(path, name, fmt, caption_col, resolved_id, prefixed, url, image_hash)


def resolve_sources(path: str | Path, caption_col: str | None = None, id_col: str | None = None,
                    url_col: str | None = None, hash_col: str | None = None) -> list[CaptionSource]:
    """Check every file of the input up front: readable, with the caption (and id, URL, hash) column."""
    files = discover(path)
    root = Path(path) if Path(path).is_dir() else Path(path).parent
    prefixed = len(files) > 1
    return [resolve_source(f, f.relative_to(root).as_posix(), caption_col, id_col, prefixed, url_col, hash_col)
            for f in files]


def input_digest(sources: list[CaptionSource]) -> str:
    """Content address of the input: file names (relative) and bytes; never absolute paths."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.name.encode() + b"\0")
        with open(source.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- shards

def plan_shards(sources: list[CaptionSource], shard_rows: int = SHARD_ROWS) -> list[Shard]:
    """Parquet files split at row-group boundaries into shards of about `shard_rows` rows; a text file is one shard.
    The layout depends only on the files, so the same input always gives the same shards."""
    shards: list[Shard] = []
    for source in sources:
        if source.format != "parquet":
            shards.append(Shard(len(shards), source, None, 0, None))
            continue
        meta = pq.ParquetFile(source.path).metadata
        group: list[int] = []
        group_rows = first = position = 0
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            if group and group_rows + rows > shard_rows:
                shards.append(Shard(len(shards), source, tuple(group), first, group_rows))
                group, group_rows, first = [], 0, position
            group.append(g)
            group_rows += rows
            position += rows
        if group or meta.num_row_groups == 0:
            shards.append(Shard(len(shards), source, tuple(group), first, group_rows))
    return shards


def read_batches(shard: Shard, batch_rows: int = BATCH_ROWS) -> Iterator[tuple[pa.Array, pa.Array]]:
    """(ids, captions) string arrays of a shard, `batch_rows` at a time, in file order."""
    for ids, captions, _ in _read(shard, batch_rows, False):
        yield ids, captions


def read_with_dedup_keys(shard: Shard, batch_rows: int = BATCH_ROWS
                         ) -> Iterator[tuple[pa.Array, pa.Array, dict[str, pa.Array]]]:
    """(ids, captions, {"url": ..., "image_hash": ...}) of a shard: its duplicate-key columns as strings, an empty
    value as null, binary hashes as lower-case hex."""
    yield from _read(shard, batch_rows, True)


def _dedup_key(column: pa.Array) -> pa.Array:
    column = decoded(column)
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type) or \
            pa.types.is_fixed_size_binary(column.type):
        return pa.array([None if v is None else v.hex() for v in column.to_pylist()], pa.string())
    column = column.cast(pa.string())
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)


def _read(shard: Shard, batch_rows: int, dedup: bool) -> Iterator[tuple[pa.Array, pa.Array, dict[str, pa.Array]]]:
    source = shard.source
    row = shard.first_row
    extra = source.dedup_columns if dedup else {}
    for batch in _raw_batches(shard, batch_rows, list(extra.values())):
        captions = _text_column(batch.column(source.caption_col), source, source.caption_col, row)
        if source.id_col is not None:
            ids = _id_column(batch.column(source.id_col), source, row)
        else:
            numbers = arrow_ints(np.arange(row, row + batch.num_rows)).cast(pa.string())
            ids = pc.binary_join_element_wise(f"{source.name}:", numbers, "") if source.row_ids_prefixed else numbers
        row += batch.num_rows
        yield ids, captions, {k: _dedup_key(batch.column(c)) for k, c in extra.items()}


def _raw_batches(shard: Shard, batch_rows: int, extra: list[str] = ()) -> Iterator[pa.RecordBatch]:
    source = shard.source
    columns = list(dict.fromkeys([source.caption_col, *([source.id_col] if source.id_col else []), *extra]))
    try:
        if source.format == "parquet":
            if shard.row_groups:
                yield from pq.ParquetFile(source.path).iter_batches(batch_size=batch_rows, row_groups=shard.row_groups,
                                                                    columns=columns, use_threads=False)
        elif source.format in ("csv", "tsv"):
            convert = pcsv.ConvertOptions(include_columns=columns, column_types={c: pa.string() for c in columns},
                                          strings_can_be_null=False, quoted_strings_can_be_null=False)
            with_parse = {"parse_options": _csv_options(source.format), "convert_options": convert}
            for batch in csv_batches(lambda: _text_stream(source.path), with_parse, 1 << 22):
                yield from (batch.slice(i, batch_rows) for i in range(0, batch.num_rows, batch_rows))
        else:
            with _text_stream(source.path) as stream:
                data = stream.read()
            codecs.decode(memoryview(data), "utf-8")  # the JSON reader would silently replace bad bytes
            schema = pa.schema([(c, pa.string()) for c in columns])
            table = read_growing(lambda block: pjson.read_json(
                pa.BufferReader(data), read_options=pjson.ReadOptions(use_threads=False, block_size=block),
                parse_options=pjson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")), 1 << 20)
            yield from table.select(columns).to_batches(max_chunksize=batch_rows)
    except UnicodeDecodeError:
        raise InputError(f"{source.path}: column {source.caption_col!r}: not valid UTF-8 text "
                         f"(line {_bad_utf8_line(source.path)})") from None
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError, ValueError) as err:
        message = _first_line(err)
        if "UTF8" in message or "UTF-8" in message:
            raise InputError(f"{source.path}: column {source.caption_col!r}: not valid UTF-8 text "
                             f"(line {_bad_utf8_line(source.path)})") from None
        raise InputError(f"{source.path}: column {source.caption_col!r}: cannot read {shard.label} ({message})"
                         ) from None


def _text_column(column: pa.Array, source: CaptionSource, name: str, first_row: int) -> pa.Array:
    column = decoded(column)
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), pa.string())
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        try:
            column = column.cast(pa.string())
        except pa.ArrowInvalid:
            raise InputError(f"{source.path}: column {name!r}: not valid UTF-8 text (row "
                             f"{first_row + _bad_utf8_row(column)})") from None
    if pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    try:
        column.validate(full=True)  # Parquet readers do not check UTF-8
    except pa.ArrowInvalid:
        raise InputError(f"{source.path}: column {name!r}: not valid UTF-8 text (row "
                         f"{first_row + _bad_utf8_row(column.cast(pa.binary()))})") from None
    return column


def _id_column(column: pa.Array, source: CaptionSource, first_row: int) -> pa.Array:
    column = decoded(column)
    if column.null_count:
        row = first_row + int(pc.index(pc.is_null(column), True).as_py())
        raise InputError(f"{source.path}: column {source.id_col!r}: missing id at row {row}")
    if not pa.types.is_string(column.type):
        column = _text_column(column, source, source.id_col, first_row) if not (
            pa.types.is_integer(column.type) or pa.types.is_floating(column.type)) else column.cast(pa.string())
    return column


def _bad_utf8_row(column: pa.Array) -> int:
    for i, value in enumerate(column.to_pylist()):
        if value is not None:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return i
    return 0


def _bad_utf8_line(path: Path) -> int:
    with _text_stream(path) as stream:
        data = stream.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return data.count(b"\n", 0, err.start) + 1
    return 0


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return re.sub(r"\s+", " ", text[0]) if text else type(err).__name__
