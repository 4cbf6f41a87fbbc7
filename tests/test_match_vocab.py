"""The shipped vocabularies: ImageNet-1k with definitions and negative words, ImageNet-100, the downstream datasets."""
from __future__ import annotations

import pytest

from tailstudy.errors import InputError
from tailstudy.matching import make_matcher
from tailstudy.vocab import BUILTIN_VOCABS, imagenet1k, load_vocab, paper_synonyms

NINE = {  # wnid -> the paper's negative words (Wen et al. 2024, concept_freq_utils/calc_class_frequency.py)
    "n02389026": ("plant", "herb", "flower", "leaf"),
    "n03535780": ("chart", "plot", "graph", "diagram"),
    "n02422699": ("car", "automobile", "vehicle", "chevy"),
    "n02879718": ("tie",),
    "n02277742": ("hair",),
    "n02412080": ("car", "truck", "automobile", "vehicle", "dodge", "logo", "computer", "memory", "random access",
                  "chip", "review"),
    "n03126707": ("bird", "fish", "water", "wing", "leg", "zoo"),
    "n04347754": ("sandwich", "bread", "italian", "meatball", "grill", "menu"),
    "n01756291": ("missile", "army", "military", "resort", "park"),
}
SIZES = {"imagenet1k": 1000, "imagenet100": 100, "cub": 200, "food101": 101, "flowers102": 102, "pets": 37,
         "dtd": 47, "places365": 365, "eurosat": 10, "cars": 196, "aircraft": 70}


def test_imagenet1k_negatives_and_definitions():
    vocab = imagenet1k()
    assert {c.key: c.negatives for c in vocab.concepts if c.negatives} == NINE
    assert all(c.definition for c in vocab.concepts)
    assert vocab.concepts[0].definition.startswith("freshwater dace-like game fish of Europe")
    assert vocab.concepts[1].synonyms == ("goldfish", "carassius auratus")  # display name, then the paper's list
    assert load_vocab("imagenet1k") is vocab  # built once


def test_builtin_sizes_and_ids():
    assert set(BUILTIN_VOCABS) == set(SIZES)
    for name, size in SIZES.items():
        vocab = load_vocab(name)
        assert vocab.name == name and len(vocab) == size
        assert len({c.concept_id for c in vocab.concepts}) == size
        assert all(c.synonyms for c in vocab.concepts)
        assert sum(bool(c.definition) for c in vocab.concepts) >= 0.9 * size  # a few classes have no descriptions
        assert make_matcher("phrase", vocab).match_one(vocab.concepts[-1].synonyms[0]) != []


def test_imagenet100_keeps_imagenet1k_ids():
    ids = [int(x) for x in "15 45 54".split()]
    vocab = load_vocab("imagenet100")
    assert [c.concept_id for c in vocab.concepts[:3]] == ids
    assert vocab.concepts[0] == imagenet1k().concepts[15]


def test_downstream_class_lists_follow_the_paper():
    places = {c.name: c.synonyms for c in load_vocab("places365").concepts}
    assert places["arcade (passageway)"] == ("arcade passageway", "arcade walkway", "arcade hallway", "arcade corridor")
    assert places["amusement_arcade"] == ("amusement_arcade",)
    cub = {c.name: c.synonyms for c in load_vocab("cub").concepts}
    assert cub["Cardinal"] == ("cardinal bird", "northern cardinal", "red cardinal")
    assert cub["Black-footed Albatross"] == ("black-footed albatross",)
    eurosat = [c.synonyms for c in load_vocab("eurosat").concepts]
    assert ("residential buildings", "homes", "apartments") in eurosat
    assert load_vocab("cub").concepts[0].definition.startswith("a seabird, black and white")


@pytest.mark.parametrize("name, synonyms", [
    ("brushland or shrubland", ("brushland", "shrubland")),
    ("baluster / handrail", ("baluster", "handrail")),
    ("military hat (bearskin or shako)", ("military hat",)),
    ("Apple Pie", ("apple pie",)),
])
def test_paper_synonyms(name, synonyms):
    assert paper_synonyms(name) == synonyms


def test_unknown_vocabulary_names_the_builtins(tmp_path):
    with pytest.raises(InputError, match="imagenet100"):
        load_vocab("imagenet21k")
