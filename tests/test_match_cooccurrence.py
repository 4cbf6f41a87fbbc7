"""concept_pairs (co-occurrence, PMI, NPMI) and the duplicate-aware counts, against an independent computation: the
per-class reference loop (pipeline/matching/reference.py) for the matches, pandas for the counting."""
from __future__ import annotations

import math
import random

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tailstudy import catalog
from tailstudy.matching.reference import NaivePhrase
from tailstudy.stages import index_and_describe, match_captions
from tailstudy.store import Workspace
from tailstudy.text import normalise
from tailstudy.vocab import load_vocab

VOCAB = [{"name": "red fox"}, {"name": "goldfish"}, {"name": "mouse"}, {"name": "jaguar", "negatives": ["car"]},
         {"name": "t-shirt", "synonyms": ["tee shirt"]}, {"name": "bowl"}]
FILLER = ["a", "photo", "of", "the", "in", "with", "my", "Car", "cute", "new"]
NAMED = ["red fox", "Red-Fox", "goldfish", "GOLDFISH's", "mice", "mouse", "jaguar", "t-shirt", "tee shirts", "bowl",
         "bowls", "foxes"]


def corpus(n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    captions: list[str] = []
    for _ in range(n):
        if captions and rng.random() < 0.25:  # a duplicate, sometimes only after normalisation
            old = rng.choice(captions)
            captions.append(old if rng.random() < 0.5 else old.upper() + " !!")
            continue
        words = [rng.choice(FILLER) for _ in range(rng.randint(0, 5))]
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            words.insert(rng.randint(0, len(words)), rng.choice(NAMED))
        captions.append(" ".join(words))
    return captions


def indexed_workspace(root, captions: list[str]) -> tuple[Workspace, str]:
    """`tailstudy match --index` of `captions` (corpus 'web', the VOCAB above) -> (workspace, vocabulary file)."""
    import yaml

    vocab_path = root / "vocab.yaml"
    vocab_path.write_text(yaml.safe_dump(VOCAB))
    path = root / "web.parquet"
    pq.write_table(pa.table({"caption": captions}), path)
    ws = Workspace(root / "ws")
    results = match_captions(ws, path, str(vocab_path), "phrase", workers=1)
    index_and_describe(ws, path, str(vocab_path), results)
    catalog.refresh(ws)
    return ws, str(vocab_path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    captions = corpus(1500)
    ws, vocab_path = indexed_workspace(tmp_path_factory.mktemp("cooc"), captions)
    naive = NaivePhrase(load_vocab(vocab_path))
    rows = [(i, c) for i, caption in enumerate(captions) for c in naive.match_one(caption)]
    truth = pd.DataFrame(rows, columns=["row", "concept_id"])
    truth["normalised"] = [normalise(captions[r]) for r in truth.row]
    return ws, captions, truth


def test_concept_pairs_equal_an_independent_computation(setup):
    ws, captions, truth = setup
    n = len(captions)
    single = truth.groupby("concept_id").size()
    both = truth.merge(truth, on="row").query("concept_id_x < concept_id_y")
    pairs = both.groupby(["concept_id_x", "concept_id_y"]).size()
    got = catalog.query(ws, "select * from concept_pairs where corpus = 'web'").set_index(["concept_a", "concept_b"])
    assert len(pairs) >= 10 and len(got) == len(pairs)
    for (a, b), count in pairs.items():
        row = got.loc[(a, b)]
        pmi = math.log(count * n / (single[a] * single[b]))
        assert (row["count"], row["count_a"], row["count_b"], row["captions"]) == (count, single[a], single[b], n)
        assert row["pmi"] == pytest.approx(pmi, rel=1e-9, abs=1e-12)
        assert row["npmi"] == pytest.approx(pmi / -math.log(count / n), rel=1e-9, abs=1e-12)


def test_duplicate_aware_counts_equal_an_independent_computation(setup):
    ws, captions, truth = setup
    expected = truth.groupby("concept_id").agg(count=("row", "size"), distinct=("normalised", "nunique"))
    got = catalog.query(ws, "select * from concept_freq_dedup where corpus = 'web'").set_index("concept_id")
    assert sorted(got.index) == sorted(expected.index)
    assert (expected["distinct"] < expected["count"]).any()  # the corpus really has duplicates
    for cid, row in expected.iterrows():
        assert (got.loc[cid, "count"], got.loc[cid, "distinct_captions"]) == (row["count"], row["distinct"])
        assert got.loc[cid, "duplicate_rate"] == pytest.approx(1 - row["distinct"] / row["count"])
    whole = catalog.query(ws, "select * from corpus_dedup where corpus = 'web'").iloc[0]
    distinct = len({normalise(c) for c in captions})
    assert (whole["captions"], whole["distinct_captions"]) == (len(captions), distinct)
    assert whole["duplicate_rate"] == pytest.approx(1 - distinct / len(captions))


def test_tokens_view_counts_a_phrase_like_tailstudy_count(setup):
    ws, captions, _ = setup
    sql = ("select count(distinct a.row) as n from tokens a join tokens b on b.corpus = a.corpus and b.row = a.row "
           "and b.pos = a.pos + 1 where a.term = 'red' and b.term = 'fox' and a.corpus = 'web'")
    assert catalog.query(ws, sql)["n"][0] == sum(" red fox " in f" {normalise(c)} " for c in captions) > 0


def test_documented_queries_over_the_new_views(setup):
    ws, _, truth = setup
    pairs = catalog.query(ws, "@top_pairs")
    assert len(pairs) > 0 and pairs.npmi.is_monotonic_decreasing and (pairs["count"] >= 5).all()
    dups = catalog.query(ws, "@duplicates")
    assert len(dups) == truth.concept_id.nunique() and dups.duplicate_rate.is_monotonic_decreasing
    assert len(catalog.query(ws, "@misaligned_concepts")) == 0  # no semantic run here


def test_verified_counts_side_by_side(tmp_path):
    captions = ["a red fox in the snow", "Red Fox brand jeans sale", "goldfish in a bowl", "goldfish crackers",
                "a jaguar in the jungle", "nothing", "two red foxes"]
    path = tmp_path / "web.parquet"
    pq.write_table(pa.table({"caption": captions}), path)
    ws = Workspace(tmp_path / "ws")
    for method in ("phrase", "semantic"):
        match_captions(ws, path, "imagenet1k", method, workers=1, corpus="web")
    catalog.refresh(ws)
    freq = catalog.query(ws, "select method, concept_id, count from concept_freq where corpus = 'web'")
    raw = freq[freq.method == "phrase"].set_index("concept_id")["count"]
    verified = freq[freq.method == "semantic"].set_index("concept_id")["count"]
    got = catalog.query(ws, "select * from verified_freq where corpus = 'web'").set_index("concept_id")
    assert len(got) == len(raw) and (got.raw_count == raw[got.index]).all()
    assert (got.verified_count == verified[got.index]).all() and (got.verified_count <= got.raw_count).all()
    hit = got[got.raw_count > 0]
    assert len(hit) >= 2
    assert (hit.misalignment_rate == 1 - hit.verified_count / hit.raw_count).all()


def test_descriptiveness_equals_an_independent_computation(tmp_path):
    import numpy as np
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    rng = random.Random(5)
    names = ["goldfish", "goldfishes", "red fox", "Red-Fox's", "tee shirt", "T-Shirt", "mice"]
    captions = []
    for i in range(600):
        name = rng.choice(names)
        kind = rng.random()
        if kind < 0.3:
            captions.append(OPENAI_IMAGENET_TEMPLATES[rng.randrange(80)](name))
        elif kind < 0.4:
            captions.append(rng.choice(["", "a ", "The "]) + name + rng.choice(["", ".", "!"]))
        else:
            captions.append(" ".join([rng.choice(FILLER) for _ in range(rng.randint(0, 8))] + [name, "at dusk"]))
    ws, vocab_path = indexed_workspace(tmp_path, captions)
    got = catalog.query(ws, "select * from concept_descriptiveness where corpus = 'web'").set_index("concept_id")
    vocab = load_vocab(vocab_path)
    naive = NaivePhrase(vocab)
    for concept in vocab.concepts:
        texts = [normalise(c) for c in captions if concept.concept_id in naive.match_one(c)]
        row = got.loc[concept.concept_id]
        assert row["captions"] == len(texts)
        if not texts:
            continue
        words = np.array([len(t.split()) for t in texts])
        forms = {f" {f} " for s in concept.synonyms
                 for f in [normalise(s), normalise(s) + "s", normalise(s) + "es", *({"mouse": ["mice"]}.get(s, []))]}
        templates = {normalise(t(f.strip())) for t in OPENAI_IMAGENET_TEMPLATES for f in forms} | {
            normalise(p + f.strip()) for p in ("", "a ", "an ", "the ") for f in forms}
        template_like = sum(t in templates for t in texts)
        assert row["mean_words"] == pytest.approx(words.mean())
        assert row["median_words"] == pytest.approx(np.median(words))
        assert row["p90_words"] == pytest.approx(np.percentile(words, 90))
        extra = np.maximum(words - len(normalise(concept.name).split()), 0)
        assert row["mean_extra_words"] == pytest.approx(extra.mean())
        assert row["template_like"] == template_like
        assert row["template_share"] == pytest.approx(template_like / len(texts))
    assert got.template_like.sum() > 100 and got.template_share.max() < 1


def test_descriptiveness_caption_levels_keep_the_samples():
    from tests.test_curate import POOL, World

    world = World(POOL)
    base = world.run(caption="full", open_world=True)[0].to_pylist()
    for level in ("most_descriptive", "least_descriptive"):
        rows = world.run(caption=level, open_world=True)[0].to_pylist()
        assert [(r["sample_id"], r["copy"], r["label"]) for r in rows] == \
            [(r["sample_id"], r["copy"], r["label"]) for r in base]
        for r in rows:
            source = world.by_id[r["sample_id"]]
            if r["label"] is None:  # label-less samples keep their own caption
                expected = source["caption"]
            elif level == "most_descriptive":  # description (8 words) when present, else the caption (5)
                expected = source["description"] or source["caption"]
            else:  # title and tags have 2 words each: the first wins
                expected = source["title"]
            assert r["caption"] == expected, (level, r)


def _expected_dedup(frame: pd.DataFrame, by: str | None) -> pd.DataFrame:
    """pandas: per group, count, distinct non-empty URLs / hashes and their duplicate rates (None where none)."""
    groups = frame.groupby(by) if by else [(None, frame)]
    out = {}
    for key, part in groups:
        row = {"count": len(part)}
        for col, name in (("url", "urls"), ("image_hash", "hashes")):
            have = part[col].dropna()
            row[f"distinct_{name}"] = have.nunique() if len(have) else None
            row[f"{name[:-1] if name == 'urls' else 'hash'}_duplicate_rate"] = \
                1 - have.nunique() / len(have) if len(have) else None
        out[key] = row
    return pd.DataFrame.from_dict(out, orient="index")


def _assert_dedup_equal(got: pd.Series, want: pd.Series) -> None:
    for col in ("distinct_urls", "distinct_hashes", "url_duplicate_rate", "hash_duplicate_rate"):
        if pd.isna(want[col]):
            assert pd.isna(got[col]), col
        else:
            assert not pd.isna(got[col]) and got[col] == pytest.approx(want[col], rel=1e-12, abs=1e-12), col


def test_url_and_hash_duplicates_of_caption_files(tmp_path):
    """Caption files with img2dataset-style `url` and `md5` columns (repeated, missing, empty): per concept and per
    corpus, distinct URLs / hashes and duplicate rates equal pandas's over the reference loop's matches."""
    import yaml

    rng = random.Random(11)
    n = 1200
    captions = corpus(n, seed=7)
    urls = [rng.choice([None, ""]) if rng.random() < 0.1 else f"http://img/{rng.randrange(500)}.jpg" for _ in range(n)]
    hashes = [None if rng.random() < 0.15 else f"{rng.randrange(350):032x}" for _ in range(n)]
    path = tmp_path / "web.parquet"
    pq.write_table(pa.table({"caption": captions, "url": pa.array(urls, pa.string()),
                             "md5": pa.array(hashes, pa.string())}), path)
    (tmp_path / "vocab.yaml").write_text(yaml.safe_dump(VOCAB))
    vocab_path = str(tmp_path / "vocab.yaml")
    ws = Workspace(tmp_path / "ws")
    results = match_captions(ws, path, vocab_path, "phrase", workers=1)
    built = index_and_describe(ws, path, vocab_path, results)
    assert built["index"].manifest()["inputs"]  # the index key names the duplicate-key columns (below)
    catalog.refresh(ws)
    clean = [u or None for u in urls]
    naive = NaivePhrase(load_vocab(vocab_path))
    truth = pd.DataFrame([(clean[i], hashes[i], c) for i in range(n) for c in naive.match_one(captions[i])],
                         columns=["url", "image_hash", "concept_id"])
    expected = _expected_dedup(truth, "concept_id")
    assert (expected.distinct_urls < expected["count"]).any() and (expected.distinct_hashes < expected["count"]).any()
    got = catalog.query(ws, "select * from concept_freq_dedup where corpus = 'web'").set_index("concept_id")
    assert sorted(got.index) == sorted(expected.index)
    for cid, want in expected.iterrows():
        assert got.loc[cid, "count"] == want["count"]
        _assert_dedup_equal(got.loc[cid], want)
    whole = catalog.query(ws, "select * from corpus_dedup where corpus = 'web'").iloc[0]
    want = _expected_dedup(pd.DataFrame({"url": clean, "image_hash": hashes}), None).iloc[0]
    assert whole["captions"] == n
    _assert_dedup_equal(whole, want)


def test_duplicate_keys_stay_null_and_keys_stay_put_without_those_columns(setup, tmp_path):
    """A corpus without URL / hash columns: NULL columns, and an index key without them (the key of old indexes)."""
    from tailstudy.matching.inputs import input_digest, resolve_sources
    from tailstudy.stages.index import index_node

    ws, _, _ = setup
    got = catalog.query(ws, "select * from concept_freq_dedup where corpus = 'web'")
    assert got[["distinct_urls", "url_duplicate_rate", "distinct_hashes", "hash_duplicate_rate"]].isna().all().all()
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"caption": ["a red fox"], "sample_id": ["x"]}), path)
    sources = resolve_sources(path)
    assert "dedup_columns" not in index_node(sources, input_digest(sources), "plain").config["key"]
    pq.write_table(pa.table({"caption": ["a red fox"], "sample_id": ["x"], "sha256": ["ab"]}), path)
    sources = resolve_sources(path)
    assert index_node(sources, "d", "plain").config["key"]["dedup_columns"] == [["plain.parquet",
                                                                                 {"image_hash": "sha256"}]]


def test_dedup_key_columns_are_checked_and_read(tmp_path):
    from tailstudy.errors import InputError
    from tailstudy.matching.inputs import plan_shards, read_with_dedup_keys, resolve_sources

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"caption": ["a", "b", "c"], "link": ["u1", "", None],
                             "digest": pa.array([b"\x01\xff", None, b"\x01\xff"], pa.binary())}), path)
    with pytest.raises(InputError, match="no URL column 'url2'"):
        resolve_sources(path, url_col="url2")
    sources = resolve_sources(path, url_col="link", hash_col="digest")
    _, _, keys = next(read_with_dedup_keys(plan_shards(sources)[0]))
    assert keys["url"].to_pylist() == ["u1", None, None] and keys["image_hash"].to_pylist() == ["01ff", None, "01ff"]


def test_url_duplicates_of_a_study_corpus(tmp_path):
    """A corpus artifact with URLs and img2dataset's sha256 (as ingest writes them), matched and counted by the study's
    own stage functions: concept_freq_urls equals pandas over the reference loop's matches."""
    from tailstudy.stages import Node, run_local
    from tailstudy.stages.frequency import frequency_node
    from tailstudy.stages.match import match_node
    from tailstudy.stages.vocab import vocab_node
    from tailstudy.store import write_parquet

    rng = random.Random(9)
    n = 800
    captions = [" ".join(rng.choice(FILLER + NAMED) for _ in range(rng.randint(1, 6))) for _ in range(n)]
    urls = [None if rng.random() < 0.1 else f"http://x/{rng.randrange(300)}.jpg" for _ in range(n)]
    hashes = [None if rng.random() < 0.2 else f"{rng.randrange(200):064x}" for _ in range(n)]
    ws = Workspace(tmp_path / "ws")
    ids = [f"s{i}" for i in range(n)]
    table = pa.table({"sample_id": ids, "caption": captions, "title": [None] * n,
                      "tags": [None] * n, "description": [None] * n, "url": pa.array(urls, pa.string()),
                      "shard": ["0.tar"] * n, "key": [f"{i:06d}" for i in range(n)]})
    from tailstudy.corpus.readers import STATUS_SCHEMA

    given = {"sample_id": ids, "url": urls, "sha256": hashes, "status": ["success"] * n}
    status = pa.table({f.name: pa.array(given.get(f.name, [None] * n), f.type) for f in STATUS_SCHEMA},
                      schema=STATUS_SCHEMA)
    with ws.build("corpus", "ck", {"inputs": {}}) as out:
        write_parquet(table, out / "captions.parquet")
        write_parquet(status, out / "downloads.parquet")
    import yaml

    (tmp_path / "vocab.yaml").write_text(yaml.safe_dump(VOCAB))
    vocab = load_vocab(str(tmp_path / "vocab.yaml"))
    corpus = Node("corpus", label="ck", key="ck")  # the corpus artifact written above
    match = match_node("phrase", {}, vocab_node(vocab, "vocab.yaml"), corpus=corpus)
    run_local(ws, [frequency_node(match, "webdataset-ck", keyed=False)], workers=1)
    catalog.refresh(ws)
    naive = NaivePhrase(vocab)
    truth = pd.DataFrame([(urls[i], hashes[i], c) for i in range(n) for c in naive.match_one(captions[i])],
                         columns=["url", "image_hash", "concept_id"])
    expected = _expected_dedup(truth, "concept_id")
    got = catalog.query(ws, "select * from concept_freq_urls where corpus = 'webdataset-ck'").set_index("concept_id")
    assert sorted(got.index) == sorted(expected.index) and (expected.distinct_urls < expected["count"]).any()
    for cid, want in expected.iterrows():
        assert got.loc[cid, "count"] == want["count"]
        _assert_dedup_equal(got.loc[cid], want)


def test_dedup_column_options_on_the_command_line(tmp_path):
    from tests.conftest import cli

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"caption": ["a red fox", "a red fox"], "link": ["u", "u"]}), path)
    ws = str(tmp_path / "ws")
    (tmp_path / "ws").mkdir()
    alone = cli("match", str(path), "--vocab", "imagenet1k", "--url-col", "link", "-w", ws)
    assert alone.returncode == 2 and "apply only with --index" in alone.stderr
    missing = cli("match", str(path), "--vocab", "imagenet1k", "--index", "--hash-col", "sha", "-w", ws)
    assert missing.returncode == 2 and "no image-hash column 'sha'" in missing.stderr
    done = cli("match", str(path), "--vocab", "imagenet1k", "--index", "--url-col", "link", "-j", "1", "-w", ws)
    assert done.returncode == 0, done.stderr
    got = catalog.query(Workspace(tmp_path / "ws"), "select * from corpus_dedup")
    assert got[["captions", "distinct_urls", "url_duplicate_rate"]].values.tolist() == [[2, 1, 0.5]]
    assert got["distinct_hashes"].isna().all()
