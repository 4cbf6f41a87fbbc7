"""Reading tables of text as real inputs have them (caption files, URL lists, metadata): rows of any length, text in
any Arrow string encoding, each column named once. Shared by tailstudy.matching.inputs and tailstudy.corpus.readers."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from tailstudy.errors import InputError

T = TypeVar("T")
MAX_BLOCK = 1 << 30  # pyarrow's CSV and JSON readers need each row inside one block: captions of up to 1 GB


def _straddles(err: pa.ArrowInvalid, block: int) -> bool:
    return "straddl" in str(err) and block < MAX_BLOCK


def read_growing(read: Callable[[int], T], first_block: int) -> T:
    """`read(block_size)`, again with 8x larger blocks while a row straddles two blocks (a caption longer than a
    block: web captions of megabytes exist)."""
    block = first_block
    while True:
        try:
            return read(block)
        except pa.ArrowInvalid as err:
            if not _straddles(err, block):
                raise
            block = min(block * 8, MAX_BLOCK)


def csv_batches(open_stream: Callable, options: dict, first_block: int) -> Iterator[pa.RecordBatch]:
    """A CSV/TSV file's batches, streamed (`options`: open_csv's parse and convert options); a row longer than the
    block starts the file again with 8x larger blocks, skipping the rows already given."""
    block, given = first_block, 0
    while True:
        seen = 0
        try:
            with open_stream() as stream:
                reader = pcsv.open_csv(stream, read_options=pcsv.ReadOptions(use_threads=False, block_size=block),
                                       **options)
                for batch in reader:
                    skip = min(max(given - seen, 0), batch.num_rows)
                    seen += batch.num_rows
                    if skip < batch.num_rows:
                        given += batch.num_rows - skip
                        yield batch.slice(skip)
            return
        except pa.ArrowInvalid as err:
            if not _straddles(err, block):
                raise
            block = min(block * 8, MAX_BLOCK)


def is_text_type(dtype: pa.DataType) -> bool:
    """Text as Arrow stores it: (large) string or binary, also dictionary-encoded (a pandas category in Parquet)."""
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type
    return (pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_binary(dtype)
            or pa.types.is_large_binary(dtype))


def decoded(column):
    """A dictionary-encoded column (array or chunked) as its plain values; anything else unchanged."""
    if not pa.types.is_dictionary(column.type):
        return column
    return column.dictionary_decode() if isinstance(column, pa.Array) else pc.cast(column, column.type.value_type)


def check_distinct(path: Path, names: list[str], used: list) -> None:
    """A column that is read must be named once: a header `caption,caption` would silently give the first."""
    for name in used:
        if name is not None and names.count(name) > 1:
            raise InputError(f"{path}: column {name!r} appears {names.count(name)} times in the header (which one "
                             "is meant? give each column its own name)")


def read_table(path: Path, fmt: str, header: bool, column_names: list[str]) -> pa.Table:
    """A whole Parquet / CSV / TSV / JSON-lines file as a table; CSV/TSV without a header take `column_names`."""
    if fmt == "parquet":
        return pq.read_table(path)
    if fmt in ("csv", "tsv"):
        # TSV lists (CC-12M) put raw quotes inside captions: no quoting there
        parse = pcsv.ParseOptions(delimiter="\t", quote_char=False) if fmt == "tsv" else pcsv.ParseOptions()
        convert = pcsv.ConvertOptions(strings_can_be_null=False)
        return read_growing(lambda block: pcsv.read_csv(
            path, read_options=pcsv.ReadOptions(column_names=None if header else column_names, block_size=block),
            parse_options=parse, convert_options=convert), 1 << 24)
    return read_growing(lambda block: pajson.read_json(path, read_options=pajson.ReadOptions(block_size=block)),
                        1 << 20)


def check_id_type(path: Path, column: str | None, dtype) -> None:
    """Sample ids are text or integers (a list or struct column cannot identify a sample)."""
    if column is None or dtype is None:
        return
    if pa.types.is_dictionary(dtype):  # a pandas category: its values are the ids
        dtype = dtype.value_type
    if not (pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_integer(dtype)
            or pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype)):
        raise InputError(f"{path}: id column {column!r} holds {dtype}, not text or integers")
