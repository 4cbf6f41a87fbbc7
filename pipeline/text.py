"""Caption normalisation and tokenisation. Their versions are part of every matching stage key: bump one when its output
changes.

Two tokenisers, each as a per-string reference (the specification) and a vectorised Arrow/numpy equivalent (what the
matchers run, tested to give the same tokens):

- ``normalise`` / ``phrase_tokens`` (NORMALISER_VERSION) for phrase matching: HTML entities decoded, accents folded,
  possessive "'s" dropped, other apostrophes removed, lower case, words = runs of [0-9a-z].
- ``paper_words`` / ``paper_tokens`` (PAPER_TOKENISER_VERSION) for the paper's bag-of-words rule: lower case, every
  character but a-z becomes a space, words split on spaces (NLTK's word_tokenize on such text only splits "cannot",
  "gimme", "gonna", "gotta", "lemme" and "wanna", which ``paper_words`` does too).

``phrase_text`` / ``paper_text`` give the text before the split (rare rows rewritten): the matchers hand it to the
compiled core (tailstudy.compiled), which splits and looks words up in one pass; ``split_bytes`` is its numpy twin.
Where the core is built, phrase_text's rare rows (entities, non-ASCII text, apostrophes) are folded in C too, from
tables this Python's ``html`` and ``unicodedata`` give (``compiled_folder``); the Arrow/Python path stays the fallback
and the specification it is tested against.
"""
from __future__ import annotations

import html
import re
import unicodedata
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tailstudy.arrays import arrow_bools, arrow_ints, arrow_strings, numpy_bools, numpy_ints
from tailstudy.compiled import core

NORMALISER_VERSION = 3
PAPER_TOKENISER_VERSION = 1

_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f\u0300-\u036f]+")  # after NFKD: separators (dashes, emoji, CJK, ...)
_COMBINING = re.compile(r"[\u0300-\u036f]+")  # after NFKD: accents, dropped
_POSSESSIVE = re.compile(r"'s\b", re.ASCII)
_WORD = re.compile(r"[0-9a-z]+")
_PAPER_NON_LETTER = re.compile(r"[^a-z ]")

# NLTK's word_tokenize splits these whole words (its other contraction rules need apostrophes, which are gone)
PAPER_CONTRACTIONS: dict[str, tuple[str, str]] = {
    "cannot": ("can", "not"), "gimme": ("gim", "me"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
    "lemme": ("lem", "me"), "wanna": ("wan", "na"),
}


# ---------------------------------------------------------------- per-string references

def _fold_non_ascii(text: str) -> str:
    """NFKD, curly apostrophe -> ', accents dropped, other non-ASCII characters -> spaces."""
    text = unicodedata.normalize("NFKD", text).replace("\u2019", "'")
    return _COMBINING.sub("", _NON_ASCII_RUN.sub(" ", text))


def normalise(text: str | None) -> str:
    """Lower-case ASCII words separated by single spaces; HTML entities decoded, accents folded, punctuation dropped.

    Hyphens and any other non-alphanumeric character separate words, so "T-shirt", "t shirt" and "T SHIRT" normalise
    alike. A possessive "'s" (or "’s") is dropped and other apostrophes are removed ("potter's wheel" -> "potter
    wheel", "don't" -> "dont"), for captions and synonyms alike. Characters that are neither ASCII nor accents after
    NFKD decomposition (emoji, CJK, dashes, ...) separate words.
    """
    if not text:
        return ""
    if "&" in text:
        text = html.unescape(text)
    if not text.isascii():
        text = _fold_non_ascii(text)
    text = _POSSESSIVE.sub("", text.lower()).replace("'", "")
    return " ".join(_WORD.findall(text))


def paper_words(text: str | None) -> list[str]:
    """The paper's caption tokens (Wen et al. 2024, before lemmatisation): lower, non-letters -> spaces, split."""
    if not text:
        return []
    words = []
    for word in _PAPER_NON_LETTER.sub(" ", text.lower()).split():
        words.extend(PAPER_CONTRACTIONS.get(word, (word,)))
    return words


# ---------------------------------------------------------------- vectorised equivalents

def as_string_array(captions: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Captions as one Arrow string array (nulls kept)."""
    if isinstance(captions, pa.ChunkedArray):
        captions = captions.combine_chunks() if captions.num_chunks != 1 else captions.chunk(0)
    if not isinstance(captions, pa.Array):
        captions = pa.array(list(captions), pa.string())
    if not pa.types.is_string(captions.type):
        captions = captions.cast(pa.string())
    return captions


def _no_nulls(arr: pa.Array) -> pa.Array:
    return pc.fill_null(arr, "") if arr.null_count else arr  # fill_null copies even when there is nothing to fill


def _lut(keep: str, lower: bool) -> np.ndarray:
    table = np.full(256, ord(" "), np.uint8)
    for ch in keep:
        table[ord(ch)] = ord(ch)
    if lower:
        for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
            table[ord(ch)] = ord(ch.lower())
    return table


PHRASE_LUT = _lut("0123456789abcdefghijklmnopqrstuvwxyz", lower=True)
PAPER_LUT = _lut("abcdefghijklmnopqrstuvwxyz", lower=True)


_AMP, _APOSTROPHE = ord("&"), ord("'")
# byte classes of the one flagging pass: which rows need the slower paths of phrase_tokens
_FLAG_AMP, _FLAG_NON_ASCII, _FLAG_APOSTROPHE = 1, 2, 4
_BYTE_FLAGS = np.zeros(256, np.uint8)
_BYTE_FLAGS[_AMP], _BYTE_FLAGS[_APOSTROPHE], _BYTE_FLAGS[128:] = _FLAG_AMP, _FLAG_APOSTROPHE, _FLAG_NON_ASCII


_ONES, _HIGHS = np.uint64(0x0101010101010101), np.uint64(0x8080808080808080)


def _words_with(words: np.ndarray, flag_bytes: bytes) -> np.ndarray:
    """Which 8-byte words hold a byte >= 128 or one of `flag_bytes` (the classic has-zero-byte bit trick, 8 bytes
    per operation instead of one)."""
    found = (words & _HIGHS) != 0
    for byte in flag_bytes:
        x = words ^ (_ONES * np.uint64(byte))
        found |= ((x - _ONES) & ~x & _HIGHS) != 0
    return found


def _row_flags(arr: pa.Array, table: np.ndarray, compiled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """-> (rows holding a byte that `table` flags, OR of their byte flags), rows ascending: one pass of the compiled
    core, or the numpy path (compiled=False, or no C extension)."""
    _validity, offsets, data = arr.buffers()
    if data is None or len(arr) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    if compiled and core is not None:
        rows, flags = core.row_flags(offsets, data, arr.offset, len(arr), table.tobytes())
        return np.frombuffer(rows, np.int64), np.frombuffer(flags, np.uint8)
    return _row_flags_numpy(arr, table)


def _row_flags_numpy(arr: pa.Array, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_row_flags with numpy: only bytes >= 128 and the bytes `table` flags below 128 are looked at, 8 at a time, then
    byte by byte inside the few words that hold one."""
    _validity, offsets, data = arr.buffers()
    ends = np.frombuffer(offsets, np.int32)[arr.offset: arr.offset + len(arr) + 1]
    raw = np.frombuffer(data, np.uint8)[ends[0]: ends[-1]]
    whole = len(raw) // 8 * 8
    words = np.flatnonzero(_words_with(raw[:whole].view(np.uint64), bytes(np.flatnonzero(table[:128]).tolist())))
    candidates = np.concatenate([(words[:, None] * 8 + np.arange(8)).ravel(), np.arange(whole, len(raw))])
    codes = table[raw[candidates]]
    hits = candidates[codes != 0]
    codes = codes[codes != 0]
    if len(hits) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    rows = np.searchsorted(ends, hits + ends[0], "right") - 1
    first = np.flatnonzero(np.concatenate([[True], rows[1:] != rows[:-1]]))
    return rows[first], np.bitwise_or.reduceat(codes, first)


def _replace_rows(arr: pa.Array, rows: np.ndarray, values: pa.Array) -> pa.Array:
    mask = np.zeros(len(arr), bool)
    mask[rows] = True
    return pc.replace_with_mask(arr, arrow_bools(mask), values)


def _map_rows(arr: pa.Array, rows: np.ndarray, fn) -> pa.Array:
    """A per-string Python function applied to a few rows -> their new values."""
    return arrow_strings([fn(s) for s in arr.take(arrow_ints(rows)).to_pylist()])


def _decompose(text: str) -> str:
    """The Python half of normalise's non-ASCII path: entities decoded, NFKD, curly apostrophe -> '."""
    if "&" in text:
        text = html.unescape(text)
    if text.isascii():
        return text
    return unicodedata.normalize("NFKD", text).replace("\u2019", "'")


def split_bytes(arr: pa.Array, lut: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """Map every byte through `lut` (kept bytes stay, the rest become spaces), split on spaces -> (row of each token,
    tokens). A caption that starts or ends with a separator gives an empty token there (no word ever matches one)."""
    _validity, offsets, data = arr.buffers()
    if data is None or data.size == 0:
        return np.zeros(0, np.int64), arrow_strings([])
    mapped = lut[np.frombuffer(data, np.uint8)]
    arr = pa.Array.from_buffers(pa.string(), len(arr), [None, offsets, pa.py_buffer(mapped)], null_count=0,
                                offset=arr.offset)
    lists = pc.ascii_split_whitespace(arr)  # runs of separators count once
    rows = numpy_ints(pc.list_parent_indices(lists)).astype(np.int64)
    return rows, pc.list_flatten(lists)


# Code points that Arrow's NFKD (utf8proc) decomposes but Python's unicodedata (Unicode 14.0, Python 3.11) does not:
# all unassigned in Unicode 14, so normalise() keeps them (as word separators). A row holding one takes the Python path,
# so the vectorised NFKD gives normalise's result exactly (tests/test_match_speed.py recomputes this list).
_ARROW_ONLY_DECOMPOSED = ((1368, 1368), (1419, 1420), (8349, 8351), (42993, 42993), (67017, 67017), (67044, 67044),
                          (67515, 67519), (70531, 70531), (70533, 70533), (70542, 70542), (70545, 70545),
                          (70597, 70597), (70599, 70600), (90401, 90408), (93544, 93546), (110883, 110886),
                          (117974, 118009), (120486, 120486), (122773, 122773), (122829, 122879), (122928, 122989))
_ARROW_NFKD_AGREES = unicodedata.unidata_version == "14.0.0" and pa.__version__.split(".")[0] == "26"
_ARROW_ONLY_RE = "[" + "".join(f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in _ARROW_ONLY_DECOMPOSED) + "]"
_NON_ASCII_SEPARATORS = r"[^\x00-\x7f\x{0300}-\x{036f}]+"


def _fold_rows_vectorised(arr: pa.Array) -> pa.Array:
    """normalise's non-ASCII folding without '&' rows: Arrow NFKD, curly apostrophe -> ', separators, accents."""
    folded = pc.replace_substring(pc.utf8_normalize(arr, form="NFKD"), "\u2019", "'")
    return pc.replace_substring_regex(pc.replace_substring_regex(folded, _NON_ASCII_SEPARATORS, " "),
                                      r"[\x{0300}-\x{036f}]+", "")


def _fold_non_ascii_rows(sub: pa.Array, flags: np.ndarray) -> pa.Array:
    """Rows with entities or non-ASCII text (and their byte flags) -> as normalise folds them: Arrow kernels for most,
    Python's unicodedata and html.unescape for rows with '&' or with a code point the two Unicode databases decompose
    differently."""
    python = (flags & _FLAG_AMP) != 0
    if _ARROW_NFKD_AGREES:
        python |= numpy_bools(pc.match_substring_regex(sub, _ARROW_ONLY_RE))
    else:  # another Unicode database: the per-string path for every row
        python[:] = True
    out = _fold_rows_vectorised(sub.filter(arrow_bools(~python))) if not python.all() else None
    if python.any():
        slow = pc.replace_substring_regex(_map_rows(sub, np.flatnonzero(python), _decompose), _NON_ASCII_SEPARATORS,
                                          " ")
        slow = pc.replace_substring_regex(slow, r"[\x{0300}-\x{036f}]+", "")
        out = slow if out is None else pc.replace_with_mask(
            pc.replace_with_mask(sub, arrow_bools(~python), out), arrow_bools(python), slow)
    return out


_FOLD_LIMIT = 0x30000  # the compiled folder's table ends here (pipeline/_core.c); a row beyond it takes normalise()


def _fold_text(ch: str) -> str:
    """What normalise makes of one character after entity decoding: NFKD, then accents dropped, U+2019 -> ', other
    non-ASCII -> a space; lower case."""
    out = []
    for c in unicodedata.normalize("NFKD", ch):
        out.append(c if c.isascii() else "" if "\u0300" <= c <= "\u036f" else "'" if c == "\u2019" else " ")
    return "".join(out).lower()


def _decomposed_below(limit: int) -> list[int]:
    """The code points in 0x80..limit that NFKD decomposes. A block whose text is already NFKD holds none (its
    combining marks may still be out of canonical order, so a block that is not is looked at code point by code
    point): about 20 ms instead of 80 for every code point."""
    found = []
    for start in range(0, limit, 256):
        block = range(max(start, 0x80), min(start + 256, limit))
        if 0xD800 <= start < 0xE000 or unicodedata.is_normalized("NFKD", "".join(map(chr, block))):
            continue
        found += [c for c in block if unicodedata.decomposition(chr(c)) or unicodedata.normalize("NFKD", chr(c))
                  != chr(c)]
    return sorted(set(found))


_folder = None


def compiled_folder():
    """The compiled folder (pipeline/_core.c: Folder) with this Python's tables, built once per process (about 20 ms):
    every code point below _FOLD_LIMIT that NFKD decomposes or that is an accent or U+2019, html.unescape's HTML5
    names, and its special numeric references."""
    global _folder
    if _folder is None:
        from html import _invalid_charrefs, _invalid_codepoints
        from html.entities import html5

        special = [0x2019, *range(0x300, 0x370), *_decomposed_below(_FOLD_LIMIT)]
        # a run of separators splits words as one does (Hangul syllables, say): those stay the table's default
        fold = {c: text for c in special if (text := _fold_text(chr(c))).strip(" ") or not text}
        names = sorted(html5)
        refs = sorted(_invalid_charrefs)
        _folder = core.Folder(list(fold), [text.encode() for text in fold.values()], [n.encode() for n in names],
                              ["".join(map(_fold_text, html5[n])).encode() for n in names], refs,
                              ["".join(map(_fold_text, _invalid_charrefs[n])).encode() for n in refs],
                              sorted(_invalid_codepoints))
    return _folder


def _phrase_text_compiled(arr: pa.Array) -> pa.Array:
    """phrase_text in one compiled pass: rare rows folded in C, the few it cannot fold (a code point at or above
    _FOLD_LIMIT, invalid UTF-8) by normalise()."""
    _validity, offsets, data = arr.buffers()
    if data is None or len(arr) == 0:
        return arr
    offsets, text, fallback = compiled_folder().fold(offsets, data, arr.offset, len(arr))
    out = pa.Array.from_buffers(pa.string(), len(arr), [None, pa.py_buffer(offsets), pa.py_buffer(text)], null_count=0)
    rows = np.frombuffer(fallback, np.int64)
    if len(rows):
        out = _replace_rows(out, rows, _map_rows(arr, rows, normalise))
    return out


def phrase_text(captions: Sequence[str | None] | pa.Array | pa.ChunkedArray, compiled: bool = True) -> pa.Array:
    """The captions with nulls as "" and their rare rows (entities, non-ASCII text, apostrophes) rewritten so that
    mapping every byte through PHRASE_LUT and splitting on its spaces gives ``normalise(...).split()``: the input of
    ``split_bytes`` here and of the phrase matcher's compiled core. compiled: the compiled folder where the C
    extension is built; else (or compiled=False) Arrow kernels and numpy, the path the compiled one is tested against."""
    arr = _no_nulls(as_string_array(captions))
    if compiled and core is not None:
        return _phrase_text_compiled(arr)
    rows, flags = _row_flags(arr, _BYTE_FLAGS, compiled)
    if len(rows) == 0:
        return arr
    # the rare rows (entities, non-ASCII text, apostrophes) are rewritten apart and put back at once
    sub = arr.take(arrow_ints(rows))
    slow = (flags & (_FLAG_AMP | _FLAG_NON_ASCII)) != 0
    if slow.any():
        folded = _fold_non_ascii_rows(sub.filter(arrow_bools(slow)), flags[slow])
        sub = folded if slow.all() else pc.replace_with_mask(sub, arrow_bools(slow), folded)
    sub = pc.replace_substring_regex(sub, r"'[sS]\b", "")  # every flagged row: folding may turn a curly ’ into '
    return _replace_rows(arr, rows, pc.replace_substring(sub, "'", ""))


def phrase_tokens(captions: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Vectorised ``normalise(...).split()`` of every caption -> (row of each token, tokens), in caption order; an
    empty token may start or end a caption's tokens (never sits between two words)."""
    return split_bytes(phrase_text(captions), PHRASE_LUT)


def paper_text(captions: Sequence[str | None] | pa.Array | pa.ChunkedArray, compiled: bool = True) -> pa.Array:
    """The captions with nulls as "" and non-ASCII rows lower-cased by Python (as the paper's), so that mapping every
    byte through PAPER_LUT and splitting on its spaces gives ``paper_tokens``. compiled=False: numpy only."""
    arr = _no_nulls(as_string_array(captions))
    rows = _row_flags(arr, _BYTE_FLAGS & _FLAG_NON_ASCII, compiled)[0]
    if len(rows):
        arr = _replace_rows(arr, rows, _map_rows(arr, rows, str.lower))  # Python's Unicode lower, as the paper's
    return arr


def paper_tokens(captions: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Vectorised paper tokeniser -> (row of each token, tokens), before contraction splitting: a token "cannot"
    stands for "can" + "not" (see PAPER_CONTRACTIONS). Empty tokens may appear, as in ``phrase_tokens``."""
    return split_bytes(paper_text(captions), PAPER_LUT)
