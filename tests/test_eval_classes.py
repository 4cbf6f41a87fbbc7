"""One evaluation class list per study: every run is scored on the same classes; undefined values read as NULL."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tailstudy.flows.runner import run_study
from tailstudy.readme_results import study_results

pytestmark = pytest.mark.slow

SPEC = """\
name: evalclasses
corpus: {concepts: 12, open_concepts: 0, samples: 1200, open_samples: 0, profile: laion400m, min_count: 5, seed: 0}
evaluate: {per_class: 5, prompts: a_cname}
factors:
  concepts: [all, 6]
  imbalance: [balanced]
learners: [clip, sl]
train: {arch: tiny, epochs: 1, batch_size: 64}
seeds: [0]
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("evalclasses")
    (root / "s.yaml").write_text(SPEC)
    run_study(str(root / "s.yaml"), str(root / "ws"))
    return root / "ws", *study_results(root / "ws", "evalclasses")


def test_every_run_is_scored_on_the_same_classes(results):
    _, run_metrics, per_class = results
    classes = per_class.groupby(["level", "learner"])["concept_id"].apply(lambda s: tuple(sorted(s)))
    assert classes.nunique() == 1 and len(classes.iloc[0]) == 12
    narrow = per_class[per_class.level == "6"]
    assert (narrow.train_count > 0).sum() == 2 * 6  # six trained classes per learner, the rest count 0
    unseen_sl = narrow[(narrow.learner == "sl") & (narrow.train_count == 0)]
    # a supervised learner never predicts a class its head lacks: those images are all wrong
    assert (unseen_sl.pred_count == 0).all() and (unseen_sl.correct == 0).all()


def test_balanced_level_has_a_corpus_rho_and_sql_averages_are_numbers(results):
    ws, run_metrics, _ = results
    balanced = run_metrics[run_metrics.level == "balanced"]
    assert balanced.rho_pred.isna().all() and balanced.rho_pred_corpus.notna().all()
    con = duckdb.connect()
    rows = con.sql(f"select avg(rho_pred) a, avg(rho_pred_corpus) b from read_parquet('{ws}/evaluate/*/metrics.parquet')"
                   " ").fetchone()
    assert all(v is not None and v == v for v in rows)  # not NULL, not NaN
