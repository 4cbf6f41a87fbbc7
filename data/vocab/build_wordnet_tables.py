"""Derive the compact WordNet 3.0 tables that tailstudy ships, so users need no system WordNet.

Run once by a maintainer (the outputs are committed):

    apt-get install wordnet-base                       # Debian/Ubuntu: WordNet 3.0 database in /usr/share/wordnet
    .venv/bin/python data/vocab/build_wordnet_tables.py [WORDNET_DIR]

Writes, next to this script:

- ``wordnet_noun_lemmas.txt.gz``: every single-word, letters-only noun lemma of ``index.noun`` (sorted, one a line),
  plus the few other noun lemmas that an exception below lists as a base. The rule path of WordNet's morphy (noun
  suffix substitutions) only ever produces letters-only forms from a letters-only token, so this set decides it
  exactly.
- ``wordnet_noun_exceptions.tsv``: ``inflected<TAB>base base ...``, the lines of ``noun.exc`` whose inflected form is
  letters-only (a caption token never holds anything else).
- ``imagenet1k_definitions.tsv``: ``wnid<TAB>definition`` (the synset gloss without its quoted examples) for the 1000
  ImageNet-1k classes.

WordNet 3.0 Copyright 2006 by Princeton University (licence: LICENSE-wordnet in this folder).
"""
from __future__ import annotations

import gzip
import io
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LETTERS = re.compile(r"^[a-z]+$")
QUOTED = re.compile(r'"[^"]*"')


def index_lemmas(wordnet: Path, pos: str = "noun") -> set[str]:
    """All lemmas of index.<pos> (license header lines start with a space)."""
    lemmas = set()
    for line in (wordnet / f"index.{pos}").read_text(encoding="latin-1").splitlines():
        if line and not line.startswith(" "):
            lemmas.add(line.split(" ", 1)[0])
    return lemmas


def letter_exceptions(wordnet: Path) -> dict[str, list[str]]:
    out = {}
    for line in (wordnet / "noun.exc").read_text(encoding="latin-1").splitlines():
        form, *bases = line.split()
        if LETTERS.match(form):  # a caption token is letters only: other keys can never be looked up
            out[form] = bases
    return out


def definitions(wordnet: Path, wnids: list[str]) -> dict[str, str]:
    wanted = {w[1:]: w for w in wnids}
    out = {}
    for line in (wordnet / "data.noun").read_text(encoding="latin-1").splitlines():
        offset = line[:8]
        if offset in wanted:
            gloss = QUOTED.sub("", line.split(" | ", 1)[1])
            out[wanted[offset]] = "; ".join(part.strip() for part in gloss.split(";") if part.strip())
    missing = [w for w in wnids if w not in out]
    if missing:
        raise SystemExit(f"{len(missing)} wnids not in data.noun, e.g. {missing[0]}")
    return out


def write_gzip_lines(path: Path, lines: list[str]) -> None:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as fh:  # byte-stable
        fh.write(("\n".join(lines) + "\n").encode("ascii"))
    path.write_bytes(buf.getvalue())


def main(wordnet: Path) -> None:
    lemmas = index_lemmas(wordnet)
    exc = letter_exceptions(wordnet)
    bases = {b for listed in exc.values() for b in listed if b in lemmas}
    shipped = sorted({x for x in lemmas if LETTERS.match(x)} | bases)
    write_gzip_lines(HERE / "wordnet_noun_lemmas.txt.gz", shipped)
    (HERE / "wordnet_noun_exceptions.tsv").write_text("".join(f"{k}\t{' '.join(v)}\n" for k, v in sorted(exc.items())))
    wnids = list(json.loads((HERE / "descriptors_imagenet_synset.json").read_text()))
    defs = definitions(wordnet, wnids)
    (HERE / "imagenet1k_definitions.tsv").write_text("".join(f"{w}\t{defs[w]}\n" for w in wnids))
    print(f"{len(shipped)} noun lemmas, {len(exc)} exceptions, {len(defs)} definitions -> {HERE}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/wordnet"))
