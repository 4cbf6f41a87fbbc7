"""The claims table on hand-made run metrics: pairing by seed, t-intervals, verdicts, untested claims."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tailstudy.claims import claims_table


def runs(rows):
    return pd.DataFrame([{"factor": f, "level": lv, "model": m, "seed": s, "rho_pred": r, "rho_pred_corpus": rc}
                         for f, lv, m, s, r, rc in rows])


def test_directional_claim_interval_and_verdict_by_hand():
    # sl - clip per seed: 0.4, 0.5, 0.6 -> mean 0.5, sd 0.1, half width t(0.975, 2) * 0.1 / sqrt(3)
    rm = runs([("imbalance", "natural", "sl", s, 0.8 + d, 0.5) for s, d in enumerate([0.0, 0.1, 0.2])]
              + [("imbalance", "natural", "clip", s, 0.4, 0.5) for s in range(3)])
    row = claims_table(rm).set_index("claim").loc["SL is more biased than CLIP"]
    half = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    assert row.effect == pytest.approx(0.5)
    assert (row.ci_low, row.ci_high) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    assert row.seeds == 3 and row.verdict == "reproduced"
    assert row.compares == "imbalance=natural/sl − imbalance=natural/clip"


def test_contradicted_inconclusive_and_not_tested():
    rm = runs([("imbalance", "natural", "sl", s, 0.2, 0.5) for s in range(3)]
              + [("imbalance", "natural", "clip", s, 0.6 + 0.01 * s, 0.5) for s in range(3)]
              + [("imbalance", "natural", "sl_sampled_vocab", 0, 0.1, 0.5)]  # one seed only
              + [("imbalance", "balanced", "clip", s, np.nan, 0.5 + 0.1 * (s - 1)) for s in range(3)])
    table = claims_table(rm).set_index("claim")
    assert table.loc["SL is more biased than CLIP", "verdict"] == "contradicted"
    assert table.loc["a sampled vocabulary debiases SL", "verdict"] == "inconclusive"  # fewer than 2 seeds
    # natural - balanced on corpus rho: 0, 0, 0 minus -0.1, 0, 0.1 -> interval contains 0
    assert table.loc["imbalance raises bias (CLIP)", "verdict"] == "inconclusive"
    assert table.loc["open-world concepts help CLIP", "verdict"] == "not tested"
    assert len(table) == 8


def test_equivalence_claim_and_scale_levels_ordered_numerically():
    rm = runs([("caption", "templates", "clip", s, 0.70 + 0.01 * s, 0.5) for s in range(3)]
              + [("caption", "templates", "sl", s, 0.71, 0.5) for s in range(3)]
              + [("scale", "0.25", "clip", s, 0.5 + 0.02 * s, 0.5) for s in range(3)]
              + [("scale", "1.0", "clip", s, 0.3, 0.5) for s in range(3)]
              + [("scale", "0.5", "clip", s, 0.9, 0.5) for s in range(3)])
    table = claims_table(rm).set_index("claim")
    assert table.loc["template-only CLIP is SL-like", "verdict"] == "reproduced"
    row = table.loc["more data scale helps CLIP"]
    assert row.compares == "scale=0.25/clip − scale=1.0/clip" and row.verdict == "reproduced"


def test_readme_results_block_is_generated_between_markers(tmp_path):
    from tailstudy.readme_results import RESULTS_END, RESULTS_START, results_markdown, rewrite

    rm = runs([("imbalance", "natural", "sl", s, 0.7 + 0.1 * s, 0.6) for s in range(3)]
              + [("imbalance", "natural", "clip", s, 0.3, 0.2) for s in range(3)]).assign(top1=0.5, tail_acc=np.nan)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{RESULTS_START}\nstale numbers\n{RESULTS_END}\noutro\n")
    rewrite(readme, results_markdown(rm, pd.DataFrame()))
    text = readme.read_text()
    assert "stale numbers" not in text and text.startswith("intro\n") and text.endswith(f"{RESULTS_END}\noutro\n")
    # sl rho_pred 0.7, 0.8, 0.9: mean 0.8, sd 0.1 over 3 seeds; tail accuracy undefined everywhere
    assert "| imbalance = natural | sl | 3 | 0.500 ± 0.000 | 0.800 ± 0.100 | 0.600 ± 0.000 | – |" in text
    assert "| SL is more biased than CLIP |" in text and "reproduced" in text
