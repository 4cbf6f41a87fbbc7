"""The semantic matcher: phrase candidates kept when caption <-> "name: definition" similarity reaches the threshold."""
from __future__ import annotations

import numpy as np
import pytest

from tailstudy.matching import make_matcher
from tailstudy.matching.semantic import DEFAULT_THRESHOLD, SemanticMatcher, concept_text
from tailstudy.spec import MatchingSpec
from tailstudy.vocab import imagenet1k

CAPTIONS = [
    "US Navy submarine surfacing",        # submarine, the vessel
    "a goldfish swimming in a bowl",      # goldfish, the fish
    "Goldfish crackers snack pack",       # goldfish, the snack: a phrase match the meaning rejects
    "Mens cotton T-shirt black size L",
    "jersey cow in the field",            # "jersey" is a T-shirt synonym; a cow is not a T-shirt
    "no concept named here",
    None,
    "",
]


@pytest.fixture(scope="module")
def inet():
    return imagenet1k()


@pytest.fixture(scope="module")
def matcher(inet):
    return SemanticMatcher(inet)


@pytest.fixture(scope="module")
def result(matcher):
    return matcher.match(CAPTIONS)


def test_keeps_the_meant_sense(inet, result):
    by_id = inet.by_id()
    kept = {(CAPTIONS[r], by_id[c].name) for r, c in zip(result[0].tolist(), result[1].tolist())}
    assert ("US Navy submarine surfacing", "submarine") in kept
    assert ("a goldfish swimming in a bowl", "goldfish") in kept
    assert ("Goldfish crackers snack pack", "goldfish") not in kept
    assert ("jersey cow in the field", "T-shirt") not in kept


def test_rule_is_threshold_on_cosine_of_candidates(inet, matcher, result):
    """Recompute the rule directly: every phrase candidate, cosine of the two embeddings, >= threshold."""
    rows, ids, _ = make_matcher("phrase", inet).match(CAPTIONS)
    by_id = inet.by_id()
    model = matcher._model
    caption_vecs = model.encode([CAPTIONS[r] for r in rows], normalize_embeddings=True)
    concept_vecs = model.encode([concept_text(by_id[c].name, by_id[c].definition) for c in ids],
                                normalize_embeddings=True)
    scores = np.round(np.sum(caption_vecs * concept_vecs, axis=1), 4)
    keep = scores >= DEFAULT_THRESHOLD
    assert list(zip(result[0].tolist(), result[1].tolist())) == list(zip(rows[keep].tolist(), ids[keep].tolist()))
    assert np.allclose(result[2], scores[keep], atol=2e-4)
    assert 0 < keep.sum() < len(keep)


def test_embeds_only_candidates(inet, matcher, monkeypatch):
    seen: list[str] = []
    original = matcher.embed
    monkeypatch.setattr(matcher, "embed", lambda texts: seen.extend(texts) or original(texts))
    matcher.match(CAPTIONS)
    assert set(seen) == {"US Navy submarine surfacing", "a goldfish swimming in a bowl",
                         "Goldfish crackers snack pack", "Mens cotton T-shirt black size L", "jersey cow in the field"}


def test_threshold_bounds_and_version(inet, matcher):
    everything = SemanticMatcher(inet, threshold=0.0)
    everything._model = matcher._model  # share the loaded model
    rows, ids, _ = make_matcher("phrase", inet).match(CAPTIONS)
    got = everything.match(CAPTIONS)
    assert got[0].tolist() == rows.tolist() and got[1].tolist() == ids.tolist()
    assert matcher.version != SemanticMatcher(inet, threshold=0.6).version  # the threshold is in the stage key
    with pytest.raises(ValueError):
        SemanticMatcher(inet, threshold=1.5)
    assert MatchingSpec(method="semantic", threshold=0.6).options() == {"threshold": 0.6}
    with pytest.raises(ValueError):
        MatchingSpec(method="phrase", threshold=0.6)
