"""Caption normalisation. Its version is part of every matching stage key: bump it when the output changes."""
from __future__ import annotations

import html
import re
import unicodedata

NORMALISER_VERSION = 1

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise(text: str | None) -> str:
    """Lower-case ASCII words separated by single spaces; HTML entities decoded, accents folded, punctuation dropped.

    Hyphens and apostrophes become spaces, so "T-shirt", "t shirt" and "T SHIRT" normalise alike.
    """
    if not text:
        return ""
    text = html.unescape(text)
    text = unicodedata.normalize("NFKD", text)
    text = text.encode("ascii", "ignore").decode("ascii").lower()
    text = text.replace("'s ", " ").replace("'", "")
    return _NON_WORD.sub(" ", text).strip()
