"""Token index of a caption corpus, and exact ad-hoc counts from it (``tailstudy count``).

The index stage (key: the captions' content digest, the caption/id columns, INDEX_VERSION, the tokenisers' versions)
writes the index in shards of SHARD_ROWS captions (``words/00000.parquet``, ``words/00001.parquet``, ... and the same in
``words_terms/``, ``lemmas/``, ``lemmas_terms/``, ``captions/``), so building holds one shard in memory, not the corpus.
In each shard, postings are sorted by term so that a term's postings are contiguous and row groups can be skipped:

- ``words``  (term, row, pos): every word of every caption as ``tailstudy.text.normalise`` splits it, with its
  caption row (0-based, input order) and its position among the caption's words;
- ``lemmas`` (term, row): every distinct WordNet noun lemma of every caption, tokenised as the paper's bag rule
  does (``tailstudy.text.paper_words``, ``tailstudy.matching.wordnet``);
- ``captions`` (row, sample_id, caption, normalised[, url][, image_hash]): the captions themselves, for
  examples and for duplicate-aware counts (``normalised`` = ``normalise(caption)``; ``url`` / ``image_hash`` only
  when the input has such a column, tailstudy.matching.inputs: empty values are null).

The count rules:

- phrase: captions in which the normalised phrase occurs as a run of whole words of the normalised caption
  (``" phrase "`` in ``" " + normalise(caption) + " "``); with ``plurals`` the phrase's last word may also take the
  plural forms the phrase matcher uses (``tailstudy.matching.phrase.inflections``);
- bag: captions whose lemma set holds every lemma of the phrase (``tailstudy.matching.bag.phrase_lemmas``), anywhere,
  in any order; a phrase without letters has no lemmas and counts nothing (as in the bag matcher).

Counting reads, shard by shard, only the postings of the phrase's words (``<kind>_terms`` says where they lie) and
intersects them (positions shifted by the word's place in the phrase), so its cost grows with those words'
frequencies, not with the corpus.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tailstudy.errors import InputError
from tailstudy.matching.bag import phrase_lemmas
from tailstudy.matching.base import Csr, arrow_ints, arrow_strings, numpy_ints, sorted_unique
from tailstudy.matching.phrase import inflections
from tailstudy.matching.wordnet import noun_lemmatiser
from tailstudy.text import NORMALISER_VERSION, PAPER_CONTRACTIONS, PAPER_TOKENISER_VERSION, normalise, normalised, \
    paper_tokens, phrase_tokens

INDEX_VERSION = 2  # 2: sharded (one file per SHARD_ROWS captions in each folder)
ROW_GROUP = 1 << 17
TERMS_GROUP = 1 << 13  # small row groups in the terms files: a look-up reads a few KB of terms per shard
SHARD_ROWS = 1_000_000  # captions per index shard: bounds the build's memory (about 1.5 GB per shard)
FOLDERS = ("words", "words_terms", "lemmas", "lemmas_terms", "captions")


def index_config() -> dict:
    return {"index": INDEX_VERSION, "normaliser": NORMALISER_VERSION, "paper_tokeniser": PAPER_TOKENISER_VERSION}


# ---------------------------------------------------------------- build

def _positions(rows: np.ndarray) -> np.ndarray:
    """Place of each token within its row (rows non-decreasing)."""
    index = np.arange(len(rows))
    starts = np.concatenate([[True], rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, bool)
    return index - np.maximum.accumulate(np.where(starts, index, 0))


def _word_postings(captions: pa.Array, first_row: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    rows, tokens = phrase_tokens(captions)
    return tokens, (rows + first_row).astype(np.int32), _positions(rows).astype(np.int32)


class _Lemmas:
    """Caption words -> distinct (row, lemma) pairs; each distinct word is lemmatised once."""

    def __init__(self):
        self.lemmatiser = noun_lemmatiser()
        self.lemma_id: dict[str, int] = {}
        self.word_lemmas: dict[str, list[int]] = {}

    def _of(self, word: str) -> list[int]:
        if word not in self.word_lemmas:
            parts = PAPER_CONTRACTIONS.get(word, (word,)) if word else ()
            self.word_lemmas[word] = sorted({self.lemma_id.setdefault(self.lemmatiser.lemmatise(p), len(self.lemma_id))
                                             for p in parts})
        return self.word_lemmas[word]

    def postings(self, captions: pa.Array, first_row: int) -> tuple[np.ndarray, np.ndarray]:
        rows, tokens = paper_tokens(captions)
        encoded = pc.dictionary_encode(tokens)
        table = Csr([self._of(w) for w in encoded.dictionary.to_pylist()])
        rows, lemmas = table.expand(rows, encoded.indices.to_numpy().astype(np.int64))
        keys = sorted_unique(rows.astype(np.int64) * (len(self.lemma_id) + 1) + lemmas)
        return (keys // (len(self.lemma_id) + 1) + first_row).astype(np.int32), keys % (len(self.lemma_id) + 1)

    def names(self) -> pa.Array:
        return arrow_strings(sorted(self.lemma_id, key=self.lemma_id.get))


def _sorted_by_term(terms: pa.Array, columns: dict[str, np.ndarray]) -> pa.Table:
    """Rows sorted by term, each term's postings kept in (row, position) order; the term column dictionary-encoded
    (sorted dictionary), so no string is copied."""
    encoded = pc.dictionary_encode(terms)
    order = pc.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    keys = np.sort((rank[encoded.indices.to_numpy()] << 32) | np.arange(len(terms), dtype=np.int64))
    perm = keys & 0xFFFFFFFF
    term = pa.DictionaryArray.from_arrays(pa.array((keys >> 32).astype(np.int32)), encoded.dictionary.take(order))
    return pa.table({"term": term, **{k: pa.array(v[perm]) for k, v in columns.items()}})


class _Shard:
    """The postings and captions of one index shard, accumulated batch by batch."""

    def __init__(self):
        self.words, self.word_rows, self.word_pos = [], [], []
        self.lemma_rows, self.lemma_ids, self.captions = [], [], []
        self.rows = 0

    def add(self, ids: pa.Array, captions: pa.Array, dedup: dict, row: int, lemmas: "_Lemmas") -> None:
        terms, rows, pos = _word_postings(captions, row)
        self.words.append(terms), self.word_rows.append(rows), self.word_pos.append(pos)
        rows, lemma_ids = lemmas.postings(captions, row)
        self.lemma_rows.append(rows), self.lemma_ids.append(lemma_ids)
        self.captions.append(pa.table({"row": arrow_ints(np.arange(row, row + len(captions))),
                                       "sample_id": ids.cast(pa.string()), "caption": captions, **dedup}))
        self.rows += len(captions)

    def write(self, out: Path, number: int, lemmas: "_Lemmas") -> dict:
        """words/, words_terms/, lemmas/, lemmas_terms/, captions/ NNNNN.parquet of this shard -> its counts."""
        words = pa.chunked_array(self.words, pa.string()).combine_chunks()
        word_table = _sorted_by_term(words, {"row": _cat(self.word_rows, np.int32),
                                             "pos": _cat(self.word_pos, np.int32)})
        lemma_terms = lemmas.names().take(arrow_ints(_cat(self.lemma_ids, np.int64)))
        lemma_table = _sorted_by_term(lemma_terms, {"row": _cat(self.lemma_rows, np.int32)})
        captions = pa.concat_tables(self.captions, promote_options="default") if self.captions else pa.table(
            {"row": arrow_ints([]), "sample_id": arrow_strings([]), "caption": arrow_strings([])})
        captions = captions.append_column("normalised", normalised(captions.column("caption")))
        name = f"{number:05d}.parquet"
        # the stage writes into a fresh directory it renames into place when done, so plain writes are atomic enough
        for kind, table in (("words", word_table), ("lemmas", lemma_table)):
            for folder, data, group in ((kind, table, ROW_GROUP), (f"{kind}_terms", term_ranges(table), TERMS_GROUP)):
                (out / folder).mkdir(exist_ok=True)
                pq.write_table(data, out / folder / name, compression="zstd", row_group_size=group)
        (out / "captions").mkdir(exist_ok=True)
        pq.write_table(captions, out / "captions" / name, compression="zstd", row_group_size=1 << 16)
        return {"words": word_table.num_rows, "lemma_postings": lemma_table.num_rows, "distinct": pc.unique(words)}


def build_index(batches: Iterable[tuple], out: Path, progress=None, shard_rows: int = SHARD_ROWS) -> dict:
    """(ids, captions[, {"url": ..., "image_hash": ...}]) batches in input order -> the index, one shard per
    `shard_rows` captions (memory is bounded by a shard, not the corpus); returns counts."""
    lemmas, row, number, shard = _Lemmas(), 0, 0, _Shard()
    totals = {"words": 0, "lemma_postings": 0}
    distinct = []
    for ids, captions, *dedup in batches:
        captions = pc.fill_null(captions, "") if captions.null_count else captions
        shard.add(ids, captions, dedup[0] if dedup else {}, row, lemmas)
        row += len(captions)
        if progress:
            progress(len(captions), None)
        if shard.rows >= shard_rows:
            number = _flush(shard, out, number, lemmas, totals, distinct)
            shard = _Shard()
    if shard.rows or number == 0:
        number = _flush(shard, out, number, lemmas, totals, distinct)
    words = len(pc.unique(pa.chunked_array(distinct, pa.string()).combine_chunks())) if distinct else 0
    return {"captions": row, "shards": number, "words": totals["words"], "distinct_words": words,
            "lemma_postings": totals["lemma_postings"], "distinct_lemmas": len(lemmas.lemma_id)}


def _flush(shard: _Shard, out: Path, number: int, lemmas: _Lemmas, totals: dict, distinct: list) -> int:
    stats = shard.write(out, number, lemmas)
    totals["words"] += stats["words"]
    totals["lemma_postings"] += stats["lemma_postings"]
    distinct.append(stats["distinct"])
    return number + 1


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


# ---------------------------------------------------------------- count

def term_ranges(table: pa.Table) -> pa.Table:
    """(term, start, postings) of a term-sorted postings table: where each term's postings lie in the file."""
    codes = table.column("term").combine_chunks().indices.to_numpy()
    starts = np.flatnonzero(np.concatenate([[True], codes[1:] != codes[:-1]])) if len(codes) else np.zeros(0, int)
    lengths = np.diff(np.concatenate([starts, [len(codes)]]))
    names = table.column("term").combine_chunks().dictionary.take(pa.array(codes[starts]))
    return pa.table({"term": names, "start": pa.array(starts, pa.int64()), "postings": pa.array(lengths, pa.int64())})


def _sorted_lookup(path: Path, column: str, wanted: list, columns: list[str]) -> pa.Table:
    """The rows of a Parquet file sorted by `column` whose value is in `wanted`: only the row groups whose min / max
    statistics can hold one are read (ParquetFile, not pyarrow.dataset, whose import costs more than the look-up)."""
    handle = pq.ParquetFile(path)
    index = handle.schema_arrow.get_field_index(column)
    groups = []
    for g in range(handle.num_row_groups):
        stats = handle.metadata.row_group(g).column(index).statistics
        if stats is None or not stats.has_min_max or any(stats.min <= w <= stats.max for w in wanted):
            groups.append(g)
    table = handle.read_row_groups(groups, columns=columns) if groups else handle.schema_arrow.empty_table().select(
        columns)
    values = arrow_strings(wanted) if isinstance(wanted[0], str) else arrow_ints(wanted)  # no pandas import
    keep = pc.is_in(table.column(column), values.cast(table.schema.field(column).type))
    return table.take(pc.indices_nonzero(keep))


def shard_files(index_dir: Path, folder: str) -> list[Path]:
    """The index's shard files of one kind (words, words_terms, lemmas, lemmas_terms, captions), in row order."""
    return sorted((index_dir / folder).glob("*.parquet"))


def _postings(index_dir: Path, kind: str, shard: str, terms: list[str], columns: list[str]) -> dict[str, pa.Table]:
    """Each term's postings in one shard: the term's place comes from ``<kind>_terms/<shard>``, then only the row
    groups of ``<kind>/<shard>`` that hold it are read (an unknown term has none)."""
    wanted = sorted(set(terms))
    ranges = _sorted_lookup(index_dir / f"{kind}_terms" / shard, "term", wanted, ["term", "start", "postings"]) \
        if wanted else None
    found = {t: (s, n) for t, s, n in zip(*(ranges.column(c).to_pylist() for c in ("term", "start", "postings")))} \
        if ranges is not None else {}
    postings = pq.ParquetFile(index_dir / kind / shard)
    bounds = np.cumsum([0] + [postings.metadata.row_group(g).num_rows for g in range(postings.num_row_groups)])
    out = {}
    for term in wanted:
        if term not in found:
            out[term] = pa.table({c: arrow_ints([], np.int32) for c in columns})
            continue
        start, n = found[term]
        first, last = np.searchsorted(bounds, start, "right") - 1, np.searchsorted(bounds, start + n - 1, "right") - 1
        part = postings.read_row_groups(list(range(first, last + 1)), columns=columns)
        out[term] = part.slice(start - bounds[first], n)
    return out


def _each_shard(index_dir: Path, kind: str, rows_of) -> np.ndarray:
    """rows_of(shard file name) over every shard, concatenated (shards hold increasing rows: the result is sorted)."""
    return np.concatenate([np.zeros(0, np.int64), *(rows_of(f.name) for f in shard_files(index_dir, kind))])


def phrase_rows(index_dir: Path, phrase: str, plurals: bool = False) -> np.ndarray:
    """Sorted rows of the captions in which the phrase occurs as whole words (see the module docstring)."""
    norm = normalise(phrase)
    if not norm:
        return np.zeros(0, np.int64)
    forms = [f.split() for f in (inflections(norm) if plurals else [norm])]
    return _each_shard(index_dir, "words", lambda shard: _phrase_rows_in(index_dir, shard, forms))


def _phrase_rows_in(index_dir: Path, shard: str, forms: list[list[str]]) -> np.ndarray:
    postings = _postings(index_dir, "words", shard, [w for f in forms for w in f], ["row", "pos"])
    width = np.int64(1 << 32)
    keys = {w: numpy_ints(t.column("row")).astype(np.int64) * width + numpy_ints(t.column("pos"))
            for w, t in postings.items()}  # sorted: each term's postings are in (row, pos) order
    found = [np.zeros(0, np.int64)]
    for form in forms:
        hits = keys[form[0]]
        for offset, word in enumerate(form[1:], start=1):
            hits = hits[_sorted_isin(hits + offset, keys[word])]
        found.append(sorted_unique(hits // width))
    return sorted_unique(np.concatenate(found))


def bag_rows(index_dir: Path, phrase: str) -> np.ndarray:
    """Sorted rows of the captions whose lemmas include every lemma of the phrase."""
    wanted = list(phrase_lemmas(phrase))
    if not wanted:
        return np.zeros(0, np.int64)
    return _each_shard(index_dir, "lemmas", lambda shard: _bag_rows_in(index_dir, shard, wanted))


def _bag_rows_in(index_dir: Path, shard: str, wanted: list[str]) -> np.ndarray:
    postings = _postings(index_dir, "lemmas", shard, wanted, ["row"])
    rows = numpy_ints(postings[wanted[0]].column("row")).astype(np.int64)
    for lemma in wanted[1:]:
        rows = rows[_sorted_isin(rows, numpy_ints(postings[lemma].column("row")).astype(np.int64))]
    return rows


def _sorted_isin(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if len(sorted_set) == 0:
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def count(index_dir: Path, phrase: str, bag: bool = False, plurals: bool = False, examples: int = 3) -> dict:
    """-> {"count", "captions", "seconds", "examples": [(sample_id, caption), ...]} for one phrase."""
    t0 = time.perf_counter()
    rows = bag_rows(index_dir, phrase) if bag else phrase_rows(index_dir, phrase, plurals)
    seconds = time.perf_counter() - t0
    shown: list = []
    files = shard_files(index_dir, "captions")
    for path in files if examples and len(rows) else ():  # the first shards hold the first rows
        table = _sorted_lookup(path, "row", rows[:examples].tolist(), ["row", "sample_id", "caption"])
        shown += list(zip(table.column("sample_id").to_pylist(), table.column("caption").to_pylist()))
        if len(shown) >= min(examples, len(rows)):
            break
    total = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    return {"count": int(len(rows)), "captions": int(total), "seconds": seconds, "examples": shown}


# ---------------------------------------------------------------- look-up

def find_index(ws, corpus: str | None) -> tuple[str, Path]:
    """(corpus name, index directory) of the workspace's index named `corpus` (or its only one)."""
    found: dict[str, Path] = {}
    for manifest in sorted((ws.root / "index").glob("*/manifest.json")):
        found.setdefault(json.loads(manifest.read_text()).get("corpus", manifest.parent.name), manifest.parent)
    if not found:
        raise InputError(f"{ws.root}: no token index yet (build one with: tailstudy match CAPTIONS --vocab V --index)")
    if corpus is None:
        if len(found) > 1:
            raise InputError(f"--corpus: the workspace indexes several corpora ({', '.join(sorted(found))}); name one")
        corpus = next(iter(found))
    if corpus not in found:
        raise InputError(f"--corpus {corpus}: no token index of that name (indexed: {', '.join(sorted(found))})")
    return corpus, found[corpus]
