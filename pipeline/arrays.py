"""Arrow <-> numpy without pandas.

pyarrow imports pandas (about 0.3 CPU-seconds) the first time it converts any Python or numpy value (``pa.array``,
``pa.scalar``, ``Array.to_numpy``), to check for pandas types. Short commands (``tailstudy count``) and the match
workers never need pandas, so their hot paths build and read Arrow arrays through buffers instead.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa


def arrow_ints(values: np.ndarray | Sequence[int], dtype=np.int64) -> pa.Array:
    """An Arrow numeric array (int or float, as `dtype`) over numpy memory, without pa.array's pandas import."""
    values = np.ascontiguousarray(values, dtype)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def arrow_bools(mask: np.ndarray) -> pa.Array:
    """An Arrow boolean array of a numpy mask (bit-packed), without pa.array's pandas import."""
    mask = np.asarray(mask, bool)
    return pa.Array.from_buffers(pa.bool_(), len(mask), [None, pa.py_buffer(np.packbits(mask, bitorder="little"))])


def _one_chunk(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        return array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    return array


def numpy_ints(array: pa.Array | pa.ChunkedArray, null: int | None = None) -> np.ndarray:
    """The values of an integer Arrow array as numpy; nulls become `null` (required when the array has nulls)."""
    array = _one_chunk(array)
    dtype = np.dtype(array.type.to_pandas_dtype())
    if len(array) == 0:
        return np.zeros(0, dtype)
    values = np.frombuffer(array.buffers()[1], dtype, len(array), array.offset * dtype.itemsize)
    if array.null_count:
        if null is None:
            raise ValueError("numpy_ints: the array has nulls; give `null`")
        values = np.where(_bits(array.buffers()[0], array.offset, len(array)), values, np.asarray(null, dtype))
    return values


def _bits(buffer: pa.Buffer, offset: int, length: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(buffer, np.uint8), bitorder="little")[offset: offset + length].astype(bool)


def numpy_bools(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The values of an Arrow boolean array as a numpy mask, null = False."""
    array = _one_chunk(array)
    if len(array) == 0:
        return np.zeros(0, bool)
    validity, data = array.buffers()[:2]
    bits = _bits(data, array.offset, len(array))
    return bits & _bits(validity, array.offset, len(array)) if validity is not None and array.null_count else bits


def arrow_strings(values: Sequence[str]) -> pa.Array:
    """An Arrow string array of Python strings (no nulls)."""
    encoded = [v.encode() for v in values]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in encoded], dtype=np.int64)]).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), len(encoded), [None, pa.py_buffer(offsets),
                                                             pa.py_buffer(b"".join(encoded))])


def arrow_repeat(value: str, n: int) -> pa.Array:
    """A string array of `n` copies of `value` (as pa.array([value] * n, pa.string()), without pandas)."""
    return pa.DictionaryArray.from_arrays(arrow_ints(np.zeros(n), np.int32), arrow_strings([value])).cast(pa.string())


def arrow_optional_strings(values: Sequence[str | None]) -> pa.Array:
    """A string array that may hold nulls (None)."""
    valid = np.array([v is not None for v in values], bool)
    strings = arrow_strings([v if v is not None else "" for v in values])
    if valid.all():
        return strings
    validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.string(), len(values), [validity, *strings.buffers()[1:]],
                                 null_count=int((~valid).sum()))


def arrow_list_of_strings(values: Sequence[Sequence[str]]) -> pa.Array:
    """A list<string> array of lists of strings (no nulls), as pa.array(values, pa.list_(pa.string()))."""
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in values], dtype=np.int64)]).astype(np.int32)
    return pa.ListArray.from_arrays(arrow_ints(offsets, np.int32), arrow_strings([s for v in values for s in v]))
