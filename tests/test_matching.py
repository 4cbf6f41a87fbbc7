"""PhraseMatcher (whole words, case, plurals, punctuation, entities, accents, negatives) and the vocabulary loaders."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from tailstudy.errors import InputError
from tailstudy.matching import make_matcher, matches_table
from tailstudy.matching.phrase import PhraseMatcher, inflections
from tailstudy.vocab import imagenet1k, load_vocab

# ImageNet-1k class indices (standard sorted-wnid order)
TENCH, GOLDFISH, TSHIRT, DAISY, CHURCH, RED_FOX, SCHOOL_BUS, CONSOMME, SPIDER_MONKEY = 0, 1, 610, 985, 497, 277, 779, \
    925, 381


@pytest.fixture(scope="module")
def inet():
    return imagenet1k()


@pytest.fixture(scope="module")
def m(inet):
    return PhraseMatcher(inet)


USER_ROWS = [
    {"name": "cart", "synonyms": ["trolley", "handcart"], "negatives": [], "definition": "a small wheeled vehicle"},
    {"name": "Jaguar", "synonyms": ["panthera onca"], "negatives": ["car", "XJ"], "definition": None},
    {"name": "crème brûlée", "synonyms": [], "negatives": [], "definition": None},
    {"name": "fish & chips", "synonyms": [], "negatives": [], "definition": None},
    {"name": "berry", "synonyms": ["toy"], "negatives": [], "definition": None},
    {"name": "buzz", "synonyms": ["bush", "box"], "negatives": [], "definition": None},
]


def _csv_text(rows) -> str:
    def cell(v):
        v = "|".join(v) if isinstance(v, list) else (v or "")
        return f'"{v}"' if "," in v else v
    lines = ["name,synonyms,negatives,definition"]
    lines += [",".join(cell(r[k]) for k in ("name", "synonyms", "negatives", "definition")) for r in rows]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def user_vocab(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "mine.csv"
    path.write_text(_csv_text(USER_ROWS), encoding="utf-8")
    return load_vocab(str(path))


@pytest.fixture(scope="module")
def um(user_vocab):
    return PhraseMatcher(user_vocab)


def names(vocab, ids):
    by_id = vocab.by_id()
    return [by_id[i].name for i in ids]


# ---------------------------------------------------------------- inflections

@pytest.mark.parametrize("phrase, plural", [
    ("cart", "carts"),
    ("goldfish", "goldfishes"),  # sh
    ("box", "boxes"),            # x
    ("buzz", "buzzes"),          # z
    ("church", "churches"),      # ch
    ("berry", "berries"),        # consonant + y
    ("toy", "toys"),             # vowel + y
    ("red fox", "red foxes"),    # only the last word is inflected
    ("t shirt", "t shirts"),
])
def test_inflections(phrase, plural):
    assert inflections(phrase) == [phrase, plural]


@pytest.mark.parametrize("phrase, forms", [
    ("bus", ["bus", "buses", "busses"]),                 # regular, then WordNet's exception list
    ("mouse", ["mouse", "mouses", "mice"]),
    ("computer mouse", ["computer mouse", "computer mouses", "computer mice"]),
    ("axis", ["axis", "axises", "axes"]),
    ("man", ["man", "mans", "men"]),
])
def test_irregular_plurals(phrase, forms):
    assert inflections(phrase) == forms


# ---------------------------------------------------------------- the phrase matcher on ImageNet-1k

@pytest.mark.parametrize("caption, expected", [
    ("goldfish", [GOLDFISH]),
    ("GOLDFISH", [GOLDFISH]),
    ("Goldfish!!!", [GOLDFISH]),
    ("(goldfish)", [GOLDFISH]),
    ("my goldfishes, in a bowl", [GOLDFISH]),
    ("goldfish,tench", [TENCH, GOLDFISH]),
    ("a Tench and a goldfish.", [TENCH, GOLDFISH]),
    ("Carassius auratus", [GOLDFISH]),
    ("T-shirt", [TSHIRT]),
    ("t shirt", [TSHIRT]),
    ("T SHIRT for sale", [TSHIRT]),
    ("three T-shirts", [TSHIRT]),
    ("daisies in a field", [DAISY]),
    ("old churches", [CHURCH]),
    ("two red foxes", [RED_FOX]),
    ("school buses", [SCHOOL_BUS]),
    ("spider monkeys", [SPIDER_MONKEY]),
    ("&lt;goldfish&gt;", [GOLDFISH]),
    ("goldfish&nbsp;bowl", [GOLDFISH]),
    ("Consommé", [CONSOMME]),
    ("CONSOMMÉ du jour", [CONSOMME]),
    ("🐟 goldfish 🐟", [GOLDFISH]),
    ("🐟goldfish", [GOLDFISH]),
    ("I ❤️ my goldfish", [GOLDFISH]),
    ("the goldfish's bowl", [GOLDFISH]),
    ("gold fish", []),
    ("goldfishbowl", []),
    ("agoldfish", []),
    ("tshirt", []),
    ("", []),
    ("   ", []),
    ("!!! ... ???", []),
    ("🐟🐟🐟", []),
    (None, []),
])
def test_imagenet_matches(m, inet, caption, expected):
    assert m.match_one(caption) == expected, names(inet, m.match_one(caption))


@pytest.mark.parametrize("caption", ["my goldfish's.", "my goldfish's", "goldfish's, tench", "the goldfish\u2019s bowl"])
def test_possessive_before_punctuation_or_with_curly_apostrophe(m, caption):
    assert GOLDFISH in m.match_one(caption)


@pytest.mark.parametrize("caption", ["goldfish\u2014tench", "goldfish🐟tench"])
def test_non_ascii_separators_keep_words_apart(m, caption):
    assert m.match_one(caption) == [TENCH, GOLDFISH]


def test_long_caption(m):
    filler = "lorem ipsum dolor sit amet, "
    long_text = filler * 400  # ~11 kB
    assert len(long_text) > 10_000
    assert m.match_one(long_text) == []
    assert m.match_one(long_text + "Goldfish") == [GOLDFISH]
    assert m.match_one("tench " + long_text) == [TENCH]
    half = len(long_text) // 2
    assert m.match_one(long_text[:half] + " a daisy " + long_text[half:]) == [DAISY]


def test_match_returns_rows_per_caption_and_concept(m):
    rows, ids, scores = m.match(["goldfish and tench", None, "nothing here", "a church"])
    assert list(zip(rows.tolist(), ids.tolist())) == [(0, TENCH), (0, GOLDFISH), (3, CHURCH)]
    assert scores.tolist() == [1.0, 1.0, 1.0]


# ---------------------------------------------------------------- a user vocabulary

@pytest.mark.parametrize("caption, expected", [
    ("cart", ["cart"]),
    ("a cart.", ["cart"]),
    ("CART!", ["cart"]),
    ("two carts", ["cart"]),
    ("a cart's wheel", ["cart"]),
    ("go-cart", ["cart"]),  # hyphens separate words
    ("cartoon", []),
    ("a cartwheel", []),
    ("supercart", []),
    ("trolleys", ["cart"]),
    ("creme brulee", ["crème brûlée"]),
    ("CRÈME BRÛLÉE", ["crème brûlée"]),
    ("Crème Brûlées for two", ["crème brûlée"]),
    ("Fish &amp; Chips", ["fish & chips"]),
    ("fish&amp;chips", ["fish & chips"]),
    ("fish and chips", []),
    ("berries", ["berry"]),
    ("berrys", []),
    ("toys", ["berry"]),
    ("bushes and boxes", ["buzz"]),
    ("buzzes", ["buzz"]),
])
def test_user_vocab_whole_words(um, user_vocab, caption, expected):
    assert names(user_vocab, um.match_one(caption)) == expected


@pytest.mark.parametrize("caption, expected", [
    ("a jaguar in the jungle", ["Jaguar"]),
    ("Panthera onca", ["Jaguar"]),
    ("jaguar car for sale", []),
    ("JAGUAR XJ", []),
    ("a car and a jaguar", []),           # anywhere in the caption
    ("jaguar on a cart", ["cart", "Jaguar"]),  # "cart" is not the negative word "car"
    ("jaguar car on a cart", ["cart"]),   # a negative word suppresses only its own concept
])
def test_negative_words(um, user_vocab, caption, expected):
    assert sorted(names(user_vocab, um.match_one(caption))) == sorted(expected)


# ---------------------------------------------------------------- matches_table

def test_matches_table_columns_and_rows(m):
    table = matches_table(["a", "b", "c", "d"], ["Goldfish and a tench", None, "nothing", "CHURCHES"], m)
    assert table.column_names == ["sample_id", "concept_id", "method", "score"]
    assert table.schema.field("sample_id").type == pa.string()
    assert table.schema.field("concept_id").type == pa.int32()
    assert table.schema.field("method").type == pa.string()
    assert pa.types.is_floating(table.schema.field("score").type)
    assert sorted(zip(table.column("sample_id").to_pylist(), table.column("concept_id").to_pylist())) == [
        ("a", TENCH), ("a", GOLDFISH), ("d", CHURCH)]
    assert set(table.column("method").to_pylist()) == {"phrase"}
    assert all(0 < s <= 1 for s in table.column("score").to_pylist())


def test_matches_table_empty(m):
    for ids, caps in (([], []), (["x", "y"], [None, "no concept in here"])):
        table = matches_table(ids, caps, m)
        assert table.num_rows == 0
        assert table.column_names == ["sample_id", "concept_id", "method", "score"]
        assert table.schema.field("sample_id").type == pa.string()
        assert table.schema.field("concept_id").type == pa.int32()


def test_make_matcher(inet):
    assert isinstance(make_matcher("phrase", inet), PhraseMatcher)
    with pytest.raises(ValueError):
        make_matcher("no-such-method", inet)


# ---------------------------------------------------------------- vocab loaders

def test_imagenet1k(inet):
    assert len(inet) == 1000
    keys = [c.key for c in inet.concepts]
    assert keys == sorted(keys) and len(set(keys)) == 1000
    assert all(re.fullmatch(r"n\d{8}", k) for k in keys)
    assert [c.concept_id for c in inet.concepts] == list(range(1000))
    assert (inet.concepts[0].key, inet.concepts[0].name) == ("n01440764", "tench")
    assert (inet.concepts[1].key, inet.concepts[1].name) == ("n01443537", "goldfish")
    for c in inet.concepts:
        assert c.synonyms[0] == c.name.lower()
        assert all(s == s.lower() for s in c.synonyms)
    assert load_vocab("imagenet1k") == inet
    table = inet.to_table()
    assert table.num_rows == 1000
    assert table.column("concept_id").to_pylist() == list(range(1000))


def _check_user(vocab):
    assert len(vocab) == len(USER_ROWS)
    assert [c.concept_id for c in vocab.concepts] == list(range(len(USER_ROWS)))
    for c, row in zip(vocab.concepts, USER_ROWS):
        assert c.name == row["name"]
        assert c.synonyms == tuple([row["name"].lower(), *(s.lower() for s in row["synonyms"])])
        assert c.negatives == tuple(n.lower() for n in row["negatives"])
        assert c.definition == row["definition"]


def test_user_vocab_csv(user_vocab):
    _check_user(user_vocab)
    assert user_vocab.name == "mine"


def test_user_vocab_tsv(tmp_path):
    path = tmp_path / "mine.tsv"
    path.write_text(_csv_text(USER_ROWS).replace(",", "\t").replace('"', ""), encoding="utf-8")
    _check_user(load_vocab(str(path)))


@pytest.mark.parametrize("wrap", ["list", "concepts"])
@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_user_vocab_json_yaml(tmp_path, fmt, wrap):
    data = USER_ROWS if wrap == "list" else {"concepts": USER_ROWS}
    path = tmp_path / f"mine.{fmt}"
    path.write_text(json.dumps(data, ensure_ascii=False) if fmt == "json" else yaml.safe_dump(data, allow_unicode=True),
                    encoding="utf-8")
    _check_user(load_vocab(str(path)))


@pytest.mark.parametrize("fmt", ["json", "yaml", "yml"])
def test_user_vocab_shorthand(tmp_path, fmt):
    data = {"cart": ["trolley"], "jaguar": []}
    path = tmp_path / f"short.{fmt}"
    path.write_text(json.dumps(data) if fmt == "json" else yaml.safe_dump(data), encoding="utf-8")
    vocab = load_vocab(str(path))
    assert [(c.concept_id, c.name, c.synonyms) for c in vocab.concepts] == [
        (0, "cart", ("cart", "trolley")), (1, "jaguar", ("jaguar",))]
    assert PhraseMatcher(vocab).match_one("two trolleys") == [0]


def test_user_vocab_yaml_list_of_names(tmp_path):
    path = tmp_path / "names.yaml"
    path.write_text("- cart\n- jaguar\n", encoding="utf-8")
    assert [c.name for c in load_vocab(str(path)).concepts] == ["cart", "jaguar"]


def test_user_vocab_csv_with_bom(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _csv_text(USER_ROWS).encode("utf-8"))
    _check_user(load_vocab(str(path)))


# ---------------------------------------------------------------- vocab errors

def _error(path: Path) -> str:
    with pytest.raises(InputError) as info:
        load_vocab(str(path))
    msg = str(info.value)
    assert str(path) in msg, msg
    assert "\n" not in msg and msg.strip() == msg, repr(msg)
    return msg


@pytest.mark.parametrize("fname, text", [
    ("empty.csv", ""),
    ("header_only.csv", "name,synonyms\n"),
    ("empty.json", ""),
    ("empty_list.json", "[]"),
    ("empty.yaml", ""),
    ("blank.yaml", "\n\n"),
])
def test_empty_vocab(tmp_path, fname, text):
    path = tmp_path / fname
    path.write_text(text, encoding="utf-8")
    assert "empty" in _error(path).lower()


@pytest.mark.parametrize("fname, text", [
    ("noname.csv", "name,synonyms\ncart,trolley\n,orphan\n"),
    ("blankname.csv", "name,synonyms\ncart,trolley\n   ,orphan\n"),
    ("noname.json", json.dumps([{"name": "cart"}, {"synonyms": ["orphan"]}])),
    ("noname.yaml", "- name: cart\n- synonyms: [orphan]\n"),
])
def test_row_without_name(tmp_path, fname, text):
    path = tmp_path / fname
    path.write_text(text, encoding="utf-8")
    msg = _error(path)
    # the second concept: row 2 (or, for a CSV, line 3 of the file counting the header)
    assert re.search(r"\brow 2\b", msg) or (fname.endswith(".csv") and re.search(r"\bline 3\b", msg)), msg
    assert "name" in msg


@pytest.mark.parametrize("fname, text", [
    ("dup.csv", "name\ncart\njaguar\ncart\n"),
    ("dupcase.csv", "name\ncart\njaguar\nCart\n"),
    ("dup.json", json.dumps(["cart", "jaguar", "cart"])),
    ("dup.yaml", "- cart\n- jaguar\n- cart\n"),
])
def test_duplicate_name(tmp_path, fname, text):
    path = tmp_path / fname
    path.write_text(text, encoding="utf-8")
    msg = _error(path)
    assert re.search(r"\brow 3\b", msg) or (fname.endswith(".csv") and re.search(r"\bline 4\b", msg)), msg
    assert "duplicate" in msg.lower() and "cart" in msg.lower()


@pytest.mark.parametrize("fname", ["latin1.csv", "latin1.json", "latin1.yaml"])
def test_non_utf8(tmp_path, fname):
    path = tmp_path / fname
    path.write_bytes("name\ncafé\n".encode("latin-1"))
    assert "utf-8" in _error(path).lower()


@pytest.mark.parametrize("fname", ["vocab.txt", "vocab.xml", "vocab"])
def test_unknown_format(tmp_path, fname):
    path = tmp_path / fname
    path.write_text("name\ncart\n", encoding="utf-8")
    _error(path)


def test_missing_file(tmp_path):
    _error(tmp_path / "nope.csv")


@pytest.mark.parametrize("fname, text", [
    ("bad.json", '[{"name": "cart",,}]'),
    ("bad.yaml", "- name: cart\n  synonyms: [a, b\n- x: : :\n"),
])
def test_unparsable(tmp_path, fname, text):
    path = tmp_path / fname
    path.write_text(text, encoding="utf-8")
    _error(path)
