"""The token index and `tailstudy count`: exact counts, checked against a brute-force scan of a generated corpus with
tricky captions (punctuation, plurals, repeated words, accents, entities, apostrophes, empty captions)."""
from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tailstudy.index import build_index, count
from tailstudy.matching.bag import phrase_lemmas
from tailstudy.matching.phrase import inflections
from tailstudy.matching.wordnet import noun_lemmatiser
from tailstudy.text import normalise, paper_words
from tests.conftest import cli

WORDS = ["red", "fox", "foxes", "Fox", "the", "a", "of", "photo", "mouse", "mice", "crème", "brûlée", "creme",
         "cafe", "café", "T-shirt", "shirt", "t", "dog's", "dogs", "dog", "cannot", "can", "opener", "red-fox", "RED",
         "FOX!", "&amp;", "rock'n'roll", "n", "roll", "fox,", "(fox)", "東京", "🦊", "fox🦊fox", "glass", "glasses",
         "berry", "berries", "photo-of-the", "ｆｏｘ", "ﬁsh", "fish"]
PHRASES = ["fox", "red fox", "the fox", "fox fox", "red fox fox", "photo of the", "of the", "mouse", "mice",
           "crème brûlée", "creme brulee", "café", "t-shirt", "t shirt", "dog", "dog's", "dogs", "can opener",
           "cannot", "rock n roll", "rock'n'roll", "fish", "glass", "berry", "ＦＯＸ", "red, fox!", "the the",
           "nothing here", "", "!!!", "a a a"]


def corpus(n: int = 3000, seed: int = 0) -> list[str | None]:
    rng = random.Random(seed)
    out: list[str | None] = []
    for _ in range(n):
        k = rng.randint(0, 9)
        out.append(None if k == 0 and rng.random() < 0.2 else " ".join(rng.choice(WORDS) for _ in range(k)))
    return out


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> tuple[Path, list[str | None]]:
    captions = corpus()
    out = tmp_path_factory.mktemp("index")
    batches = [(pa.array([f"s{i}" for i in range(start, min(start + 700, len(captions)))]),
                pa.array(captions[start:start + 700], pa.string())) for start in range(0, len(captions), 700)]
    stats = build_index(batches, out, shard_rows=1000)  # shards of 1400, 1400 and 200 captions: counts span shards
    assert stats["captions"] == len(captions) and stats["shards"] == 3
    return out, captions


def brute_phrase(captions, phrase: str, plurals: bool = False) -> list[int]:
    norm = normalise(phrase)
    forms = [f" {f} " for f in (inflections(norm) if plurals else [norm])] if norm else []
    return [i for i, c in enumerate(captions) if any(f in f" {normalise(c)} " for f in forms)]


def brute_bag(captions, phrase: str) -> list[int]:
    wanted, lem = set(phrase_lemmas(phrase)), noun_lemmatiser()
    return [i for i, c in enumerate(captions) if wanted and wanted <= {lem.lemmatise(w) for w in paper_words(c)}]


@pytest.mark.parametrize("phrase", PHRASES)
def test_phrase_counts_equal_a_brute_force_scan(index, phrase):
    path, captions = index
    for plurals in (False, True):
        expected = brute_phrase(captions, phrase, plurals)
        found = count(path, phrase, plurals=plurals, examples=2)
        assert found["count"] == len(expected), (phrase, plurals)
        assert [sid for sid, _ in found["examples"]] == [f"s{i}" for i in expected[:2]]
        assert found["captions"] == len(captions)


@pytest.mark.parametrize("phrase", PHRASES)
def test_bag_counts_equal_a_brute_force_scan(index, phrase):
    path, captions = index
    assert count(path, phrase, bag=True)["count"] == len(brute_bag(captions, phrase)), phrase


def test_the_corpus_has_the_tricky_cases(index):
    """Guards the test itself: the phrases above really hit repeated words, plurals and accents."""
    _path, captions = index
    assert len(brute_phrase(captions, "fox fox")) > 10 and len(brute_phrase(captions, "crème brûlée")) > 10
    assert len(brute_phrase(captions, "fox", plurals=True)) > len(brute_phrase(captions, "fox"))
    assert len(brute_bag(captions, "red fox")) > len(brute_phrase(captions, "red fox"))


def test_count_command(tmp_path):
    captions = corpus(400, seed=1)
    path = tmp_path / "web.parquet"
    pq.write_table(pa.table({"caption": pa.array(captions, pa.string())}), path)
    ws = tmp_path / "ws"
    ws.mkdir()
    assert cli("count", "fox", "-w", str(ws)).returncode == 2  # no index yet: one line, exit 2
    done = cli("match", str(path), "--vocab", "imagenet1k", "--index", "-j", "1", "-w", str(ws))
    assert done.returncode == 0, done.stderr
    result = cli("count", "red fox", "--examples", "1", "-w", str(ws))
    assert result.returncode == 0, result.stderr
    expected = brute_phrase(captions, "red fox")
    assert result.stdout.startswith(f"{len(expected):,} of 400 captions of 'web'")
    assert f"  {expected[0]}: " in result.stdout
    bag = cli("count", "red fox", "--bag", "--corpus", "web", "-w", str(ws))
    assert bag.stdout.startswith(f"{len(brute_bag(captions, 'red fox')):,} of 400")
    wrong = cli("count", "fox", "--corpus", "nope", "-w", str(ws))
    assert wrong.returncode == 2 and "no token index of that name" in wrong.stderr
