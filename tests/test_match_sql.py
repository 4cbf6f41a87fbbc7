"""The documented queries of sql/queries/ on the shipped reference tables and on a matched corpus."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tailstudy import catalog
from tailstudy.stages import match_captions
from tailstudy.store import Workspace

NEW_QUERIES = ["reference_correlations", "corpus_vs_reference", "reference_imbalance", "concept_head_tail",
               "caption_coverage"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace with one matched corpus: captions drawn so that LAION-400M's most frequent classes come first."""
    from tailstudy.frequency import reference_counts
    from tailstudy.vocab import imagenet1k

    laion = reference_counts("laion400m")
    top = sorted(imagenet1k().concepts, key=lambda c: -laion[c.name])[:40]
    caps = [f"photo of a {c.synonyms[0]}" for i, c in enumerate(top) for _ in range(40 - i)] + ["nothing"] * 10
    path = tmp_path_factory.mktemp("in") / "web.parquet"
    pq.write_table(pa.table({"caption": caps}), path)
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    match_captions(ws, path, "imagenet1k", "phrase", workers=1)
    catalog.refresh(ws)
    return ws


def test_reference_correlations_match_the_paper(ws):
    df = catalog.query(ws, "@reference_correlations").set_index(["dataset", "corpus_a", "corpus_b"])
    assert df.loc[("imagenet", "laion2b", "laion400m"), "spearman"] == pytest.approx(0.99, abs=0.01)
    assert df.loc[("imagenet", "laion400m", "metaclip_400m"), "spearman"] == pytest.approx(0.76, abs=0.01)
    assert df.loc[("imagenet", "laion2b", "laion400m"), "classes"] == 1000
    assert {"cub", "dtd", "eurosat", "flowers102", "food101", "pets", "places365"} <= set(df.index.get_level_values(0))


def test_reference_imbalance_match_the_paper(ws):
    df = catalog.query(ws, "@reference_imbalance").set_index("reference")
    assert df.loc["laion400m_imagenet", "gini"] == pytest.approx(0.80, abs=0.005)
    assert df.loc["metaclip_400m_imagenet", "gini"] == pytest.approx(0.66, abs=0.005)
    assert df.loc["incaps_imagenet", "gini"] == pytest.approx(0.22, abs=0.005)
    assert (df.loc["laion400m_imagenet", "max"], df.loc["laion400m_imagenet", "min_nonzero"]) == (6137117, 22)


def test_corpus_queries(ws):
    vs = catalog.query(ws, "@corpus_vs_reference")
    assert set(vs.reference) == {"laion400m_imagenet", "laion2b_imagenet", "metaclip_400m_imagenet",
                                 "metaclip_fullcc_imagenet", "cc12m_imagenet", "yfcc15m_imagenet"}
    assert (vs.concepts == 1000).all()
    assert vs.set_index("reference").loc["laion400m_imagenet", "spearman"] > 0.1  # built from LAION's head
    parts = catalog.query(ws, "@concept_head_tail")
    assert parts.part.tolist() == ["head", "middle", "tail"] and parts.concepts.tolist() == [334, 333, 333]
    matches = catalog.query(ws, "select count(*) AS n from matches").n.iloc[0]
    assert parts.matches.sum() == matches >= sum(range(1, 41)) and parts.share.iloc[0] > 0.95
    coverage = catalog.query(ws, "@caption_coverage").iloc[0]
    assert (coverage.captions, coverage.no_concept) == (sum(range(1, 41)) + 10, 10)
    top = catalog.query(ws, "@top_concepts")
    assert len(top) == 20 and top["count"].iloc[0] == catalog.query(ws, "select max(count) AS m from concept_freq").m[0]
    for name in NEW_QUERIES:
        assert name in catalog.named_queries()
