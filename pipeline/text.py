"""Caption normalisation. Its version is part of every matching stage key: bump it when the output changes."""
from __future__ import annotations

import html
import re
import unicodedata

NORMALISER_VERSION = 2

_NON_WORD = re.compile(r"[^0-9a-z]+")
_POSSESSIVE = re.compile(r"['\u2019]s\b")
_APOSTROPHE = re.compile(r"['\u2019]")
# after NFKD: any non-ASCII character that is not a combining accent separates words (dashes, emoji, CJK)
_NON_ASCII_SEPARATOR = re.compile(r"[^\x00-\x7f\u0300-\u036f]+")


def normalise(text: str | None) -> str:
    """Lower-case ASCII words separated by single spaces; HTML entities decoded, accents folded, punctuation dropped.

    Hyphens become spaces, so "T-shirt", "t shirt" and "T SHIRT" normalise alike. A possessive "'s" is dropped and other
    apostrophes are removed ("potter's wheel" -> "potter wheel", "don't" -> "dont"), for captions and synonyms alike.
    """
    if not text:
        return ""
    text = html.unescape(text)
    text = unicodedata.normalize("NFKD", text)
    text = _POSSESSIVE.sub("", text)
    text = _APOSTROPHE.sub("", text)
    text = _NON_ASCII_SEPARATOR.sub(" ", text)
    text = text.encode("ascii", "ignore").decode("ascii").lower()
    return _NON_WORD.sub(" ", text).strip()
