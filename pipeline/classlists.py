"""Named class lists (subsets of a vocabulary) used by the concept-breadth factor."""
from __future__ import annotations

from tailstudy.errors import SpecError
from tailstudy.paths import DATA_DIR

# name -> file of imagenet1k class indices, one per line (ImageNet-100 of CMC, as used by Wen et al. 2024)
CLASS_LISTS = {"imagenet100": DATA_DIR / "vocab" / "imagenet100_idxs.txt"}


def named_class_list(name: str) -> list[int]:
    if name not in CLASS_LISTS:
        raise SpecError(f"concepts: unknown class list {name!r} (known: {', '.join(CLASS_LISTS)})")
    return [int(line) for line in CLASS_LISTS[name].read_text().split() if line.strip()]
