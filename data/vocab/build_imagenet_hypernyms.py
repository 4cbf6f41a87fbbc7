"""Derive ``imagenet1k_hypernyms.tsv``: each ImageNet-1k wnid's WordNet 3.0 hypernym path, the synthetic world's
concept families (``pipeline/corpus/synthetic.py``, world 3) are cut from. Run once by a maintainer (output committed):

    apt-get install wordnet-base && .venv/bin/python data/vocab/build_imagenet_hypernyms.py [WORDNET_DIR]

Line format: ``wnid<TAB>path`` where path is the wnids from the root (entity) down to the class itself, space-separated,
following the first hypernym (or instance hypernym) pointer of each synset.
WordNet 3.0 Copyright 2006 by Princeton University (licence: LICENSE-wordnet in this folder).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def first_hypernym(data: bytes, offset: int) -> int | None:
    """The synset's first '@' (hypernym) or '@i' (instance hypernym) noun pointer, from its data.noun line."""
    line = data[offset:data.index(b"\n", offset)].decode("latin-1").split(" | ")[0].split()
    n_words = int(line[3], 16)
    pos = 4 + 2 * n_words
    n_pointers = int(line[pos])
    for i in range(n_pointers):
        symbol, target, target_pos = line[pos + 1 + 4 * i: pos + 4 + 4 * i]
        if symbol in ("@", "@i") and target_pos == "n":
            return int(target)
    return None


def path_of(data: bytes, offset: int) -> list[int]:
    path = [offset]
    while (parent := first_hypernym(data, path[-1])) is not None:
        path.append(parent)
    return path[::-1]


def main(wordnet: Path) -> None:
    data = (wordnet / "data.noun").read_bytes()
    wnids = list(json.loads((HERE / "descriptors_imagenet_synset.json").read_text()))
    lines = [f"{w}\t{' '.join(f'n{o:08d}' for o in path_of(data, int(w[1:])))}" for w in wnids]
    (HERE / "imagenet1k_hypernyms.tsv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/wordnet"))
