"""Caption normalisation and tokenisation. Their versions are part of every matching stage key: bump one when its output
changes.

Two tokenisers, each as a per-string function (the specification) and a vectorised equivalent (what the matchers and
the token index run, tested to give the same words on every row):

- ``normalise`` / ``phrase_tokens`` (NORMALISER_VERSION) for phrase matching: HTML entities decoded, accents folded,
  possessive "'s" dropped, other apostrophes removed, lower case, words = runs of [0-9a-z].
- ``paper_words`` / ``paper_tokens`` (PAPER_TOKENISER_VERSION) for the paper's bag-of-words rule: lower case, every
  character but a-z becomes a space, words split on spaces (NLTK's word_tokenize on such text only splits "cannot",
  "gimme", "gonna", "gotta", "lemme" and "wanna", which ``paper_words`` does too).

The vectorised paths run Arrow kernels on the rows where those kernels provably do what the specification does (ASCII
text: a byte table, splitting on spaces; for phrase text also the possessive regex, whose ASCII semantics RE2 shares),
and call the per-string function on every other row (HTML entities, non-ASCII text), so they hold no Unicode or HTML
table of their own: they follow whatever this Python's ``html`` and ``unicodedata`` do.
"""
from __future__ import annotations

import html
import re
import unicodedata
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tailstudy.arrays import arrow_bools, arrow_strings, numpy_bools, numpy_ints

NORMALISER_VERSION = 3
PAPER_TOKENISER_VERSION = 1

# each rule as Python's re runs it and as Arrow's RE2 runs it (same code point ranges; RE2's \b is re.ASCII's)
_NON_ASCII_RUN, _NON_ASCII_RUN_RE2 = re.compile(r"[^\x00-\x7f\u0300-\u036f]+"), r"[^\x{0}-\x{7f}\x{300}-\x{36f}]+"
_COMBINING, _COMBINING_RE2 = re.compile(r"[\u0300-\u036f]+"), r"[\x{300}-\x{36f}]+"  # after NFKD: accents, dropped
_POSSESSIVE, _POSSESSIVE_RE2 = re.compile(r"'s\b", re.ASCII), r"'[sS]\b"  # the RE2 one runs before lower-casing
_WORD = re.compile(r"[0-9a-z]+")
_PAPER_NON_LETTER = re.compile(r"[^a-z ]")

# NLTK's word_tokenize splits these whole words (its other contraction rules need apostrophes, which are gone)
PAPER_CONTRACTIONS: dict[str, tuple[str, str]] = {
    "cannot": ("can", "not"), "gimme": ("gim", "me"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
    "lemme": ("lem", "me"), "wanna": ("wan", "na"),
}


# ---------------------------------------------------------------- per-string references

def _decompose(text: str) -> str:
    """normalise's first step, the one that needs Python's html and unicodedata: entities decoded, then, for
    non-ASCII text, NFKD and the curly apostrophe -> '."""
    if "&" in text:
        text = html.unescape(text)
    return text if text.isascii() else unicodedata.normalize("NFKD", text).replace("\u2019", "'")


def normalise(text: str | None) -> str:
    """Lower-case ASCII words separated by single spaces; HTML entities decoded, accents folded, punctuation dropped.

    Hyphens and any other non-alphanumeric character separate words, so "T-shirt", "t shirt" and "T SHIRT" normalise
    alike. A possessive "'s" (or "’s") is dropped and other apostrophes are removed ("potter's wheel" -> "potter
    wheel", "don't" -> "dont"), for captions and synonyms alike. Characters that are neither ASCII nor accents after
    NFKD decomposition (emoji, CJK, dashes, ...) separate words.
    """
    if not text:
        return ""
    text = _decompose(text)
    if not text.isascii():  # separators (dashes, emoji, CJK, ...) -> spaces, accents dropped
        text = _COMBINING.sub("", _NON_ASCII_RUN.sub(" ", text))
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


# string scalars taken from an array: pa.scalar (or a str given to a kernel) imports pandas (tailstudy.arrays)
EMPTY, SPACE, NEWLINE = arrow_strings(["", " ", "\n"])


def _no_nulls(arr: pa.Array) -> pa.Array:
    return pc.fill_null(arr, EMPTY) if arr.null_count else arr  # fill_null copies even when there is nothing to fill


def _lut(keep: str) -> np.ndarray:
    """A byte table: the `keep` bytes stay, A-Z become a-z (when a-z are kept), every other byte becomes a space."""
    table = np.full(256, ord(" "), np.uint8)
    for ch in keep:
        table[ord(ch)] = table[ord(ch.upper())] = ord(ch)
    return table


PHRASE_LUT = _lut("0123456789abcdefghijklmnopqrstuvwxyz")
PAPER_LUT = _lut("abcdefghijklmnopqrstuvwxyz")


def _map_bytes(arr: pa.Array, lut: np.ndarray) -> pa.Array:
    """Every byte of a string array without nulls mapped through `lut` (a byte table that keeps ASCII as ASCII); only
    the array's own bytes, not the whole buffer a slice shares."""
    _validity, offsets, data = arr.buffers()
    if len(arr) == 0 or data is None:
        return arr
    ends = np.frombuffer(offsets, np.int32, len(arr) + 1, arr.offset * 4)
    mapped = lut[np.frombuffer(data, np.uint8, ends[-1] - ends[0], ends[0])]
    return pa.Array.from_buffers(pa.string(), len(arr), [None, pa.py_buffer(ends - ends[0]), pa.py_buffer(mapped)],
                                 null_count=0)


def split_bytes(arr: pa.Array, lut: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """Map every byte through `lut` (kept bytes stay, the rest become spaces), split on spaces -> (row of each token,
    tokens). A caption that starts or ends with a separator gives an empty token there (no word ever matches one)."""
    if len(arr) == 0:
        return np.zeros(0, np.int64), arrow_strings([])
    lists = pc.ascii_split_whitespace(_map_bytes(arr, lut))  # runs of separators count once
    rows = numpy_ints(pc.list_parent_indices(lists)).astype(np.int64)
    return rows, pc.list_flatten(lists)


# rows that hold more than ASCII words: an HTML entity, an apostrophe or non-ASCII text
_RARE_ROWS = r"[&'\x{80}-\x{10ffff}]"


def _ascii_words(arr: pa.Array) -> pa.Array:
    """normalise() of ASCII rows without entities or apostrophes: lower-case runs of [0-9a-z] joined by one space."""
    words = pc.binary_join(pc.ascii_split_whitespace(_map_bytes(arr, PHRASE_LUT)), SPACE)
    return pc.ascii_trim(words, " ")  # a separator at either end leaves an empty word there


def normalised(captions: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> pa.Array:
    """``normalise`` of every caption, vectorised: a string array without nulls, equal to ``normalise`` row by row.

    Rows of plain ASCII words take Arrow kernels only (PHRASE_LUT, a split / join on spaces). The other rows (about
    one in four of bench_match.py's web-like captions) take ``normalise``'s own steps: ``_decompose`` in Python, row
    by row (this Python's html and unicodedata: no table of ours), then its regular expressions in Arrow (RE2)."""
    arr = _no_nulls(as_string_array(captions))
    rare = numpy_bools(pc.match_substring_regex(arr, _RARE_ROWS))
    if rare.any():  # made plain ASCII words first
        sub = arrow_strings([_decompose(s) for s in arr.filter(arrow_bools(rare)).to_pylist()])
        sub = pc.replace_substring_regex(pc.replace_substring_regex(sub, _NON_ASCII_RUN_RE2, " "), _COMBINING_RE2, "")
        sub = pc.replace_substring(pc.replace_substring_regex(sub, _POSSESSIVE_RE2, ""), "'", "")
        arr = pc.replace_with_mask(arr, arrow_bools(rare), sub)
    return _ascii_words(arr)


def phrase_tokens(captions: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Vectorised ``normalise(...).split()`` of every caption -> (row of each token, tokens), in caption order, no
    empty token."""
    lists = pc.split_pattern(normalised(captions), " ")
    rows = numpy_ints(pc.list_parent_indices(lists)).astype(np.int64)
    tokens = pc.list_flatten(lists)
    keep = numpy_ints(pc.binary_length(tokens)) > 0  # an empty caption splits into one empty token
    return (rows, tokens) if keep.all() else (rows[keep], tokens.filter(arrow_bools(keep)))


def paper_text(captions: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> pa.Array:
    """The captions with nulls as "" and non-ASCII rows lower-cased by Python (as the paper's; its lower case can
    give ASCII letters: K, the Kelvin sign, -> k), so that mapping every byte through PAPER_LUT and splitting on its
    spaces gives ``paper_tokens``."""
    arr = _no_nulls(as_string_array(captions))
    other = ~numpy_bools(pc.string_is_ascii(arr))
    if not other.any():
        return arr
    lowered = arrow_strings([s.lower() for s in arr.filter(arrow_bools(other)).to_pylist()])
    return pc.replace_with_mask(arr, arrow_bools(other), lowered)


def paper_tokens(captions: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Vectorised paper tokeniser -> (row of each token, tokens), before contraction splitting: a token "cannot"
    stands for "can" + "not" (see PAPER_CONTRACTIONS). Empty tokens may start or end a caption's tokens."""
    return split_bytes(paper_text(captions), PAPER_LUT)
