"""The claims table on hand-made run metrics: each claim's comparison and sign, t-intervals, the chance guard, power,
the trend and difference-in-differences claims, and the README block."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tailstudy.claims import CLAIMS, claims_table

METRICS = ("top1", "rho_acc", "rho_pred", "rho_acc_corpus", "tail_acc")


def run(factor, level, learner, seed, kind=None, options=None, **values):
    row = {"factor": factor, "level": level, "learner": learner, "seed": seed, "kind": kind or learner,
           "options": json.dumps(options or {}), **{m: np.nan for m in METRICS}, "top1": 0.5}
    return {**row, **values}


def table(rows, classes=100):
    return claims_table(pd.DataFrame(rows), classes=classes).set_index(["claim", "metric"])


def test_a_difference_claim_by_hand():
    # sl − clip per seed on rho_pred: 0.4, 0.5, 0.6 -> mean 0.5, half width t(0.975, 2) * 0.1 / sqrt(3)
    rows = [run("imbalance", "natural", "sl", s, rho_pred=0.8 + d, rho_acc=0.6) for s, d in enumerate([0, 0.1, 0.2])]
    rows += [run("imbalance", "natural", "clip", s, rho_pred=0.4, rho_acc=0.3 + 0.01 * s) for s in range(3)]
    got = table(rows).loc["SL is more biased than CLIP"]
    half = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    pred = got.loc["rho_pred"]
    assert pred.effect == pytest.approx(0.5) and pred.seeds == 3
    assert (pred.ci_low, pred.ci_high) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    assert pred.compares == "imbalance=natural/sl vs imbalance=natural/clip"
    assert got.loc["rho_acc", "effect"] == pytest.approx(0.29)
    assert set(got["verdict"]) == {"reproduced"}


def test_a_claim_is_contradicted_when_one_metric_goes_the_other_way():
    # descriptive captions: rho_pred lower with full text (as stated) but top-1 lower too (against the claim)
    rows = [run("caption", "title", "clip", s, rho_pred=0.4 + 0.01 * s, top1=0.6) for s in range(3)]
    rows += [run("caption", "full", "clip", s, rho_pred=0.2, top1=0.5 - 0.01 * s) for s in range(3)]
    got = table(rows).loc["descriptive captions help CLIP"]
    assert got.loc["rho_pred", "metric_verdict"] == "reproduced"
    assert got.loc["top1", "metric_verdict"] == "contradicted"
    assert set(got["verdict"]) == {"contradicted"}
    assert got.loc["top1", "effect"] == pytest.approx(-0.11)  # full − title, as the paper states it


def test_a_run_near_chance_decides_nothing():
    # 100 classes: chance 0.01; a CLIP at top-1 0.015 is within 2x chance
    rows = [run("imbalance", "natural", "sl", s, rho_pred=0.8 + 0.01 * s, rho_acc=0.6 + 0.01 * s) for s in range(3)]
    rows += [run("imbalance", "natural", "clip", s, rho_pred=-0.1, rho_acc=0.0, top1=0.015) for s in range(3)]
    got = table(rows).loc["SL is more biased than CLIP"]
    assert set(got["verdict"]) == {"near chance (imbalance=natural/clip/s0)"}
    assert set(table(rows, classes=None).loc["SL is more biased than CLIP"]["verdict"]) == {"reproduced"}


def test_an_interval_wider_than_the_papers_effect_is_underpowered_and_says_how_many_seeds_would_do():
    # scale: top-1 differences 0.3, -0.1, 0.1 (sd 0.2): wider than the paper's 0.16 -> underpowered
    effects = [0.3, -0.1, 0.1]
    rows = [run("scale", "0.25", "clip", s, top1=0.4, rho_acc=0.5 + 0.01 * s) for s in range(3)]
    rows += [run("scale", "1.0", "clip", s, top1=0.4 + e, rho_acc=0.4) for s, e in enumerate(effects)]
    rows += [run("scale", "0.5", "clip", s, top1=0.9, rho_acc=0.0) for s in range(3)]  # not the extremes
    got = table(rows).loc["more data scale helps CLIP"]
    top1 = got.loc["top1"]
    assert top1.compares == "scale=0.25/clip vs scale=1.0/clip"
    assert top1.metric_verdict == "underpowered" and top1.verdict == "inconclusive"
    sd = np.std(effects, ddof=1)
    n = int(top1.needed)
    assert stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n) < 0.16 <= stats.t.ppf(0.975, n - 2) * sd / np.sqrt(n - 1)


def test_an_interval_around_0_below_the_papers_effect_is_smaller_than_the_papers():
    # sampled vocabulary, rho_acc: sl - sl_sampled_vocab = 0.02, -0.01, 0.03 -> [-0.03, 0.06], below the paper's 0.13
    rows = [run("imbalance", "natural", "sl", s, rho_pred=0.8, rho_acc=0.6) for s in range(3)]
    rows += [run("imbalance", "natural", "sl_sampled_vocab", s, rho_pred=0.3 + 0.01 * s, rho_acc=0.6 - e)
             for s, e in enumerate([0.02, -0.01, 0.03])]
    got = table(rows).loc["a sampled vocabulary debiases SL"]
    acc = got.loc["rho_acc"]
    assert acc.ci_low < 0 < acc.ci_high < 0.13 and (acc.ci_high - acc.ci_low) / 2 < 0.13
    assert acc.metric_verdict == "smaller than the paper's" and acc.verdict == "inconclusive"
    assert got.loc["rho_pred", "metric_verdict"] == "reproduced"


def test_template_clip_closer_to_the_sl_vocabulary_trend_than_full_text_clip():
    # SL runs on a line rho_pred = 2 rho_acc - 0.5, top1 = 0.6; template CLIP on it, full-text CLIP far below
    rows = []
    for s in range(3):
        for name, kind, x, options in (("sl", "sl", 0.5, {"head": "cosine"}),
                                       ("sl_sampled_vocab", "sl_sampled_vocab", 0.4, {"head": "cosine"}),
                                       ("sl_voc50", "sl_sampled_vocab", 0.45, {"head": "cosine", "num_to_sample": 50}),
                                       ("sl_frozen", "sl", 0.1, {"head": "frozen_random"})):  # not a vocabulary run
            rows.append(run("imbalance", "natural", name, s, kind, options, rho_acc=x, rho_pred=2 * x - 0.5,
                            top1=0.6))
        rows.append(run("caption", "templates", "clip", s, rho_acc=0.48, rho_pred=0.46 + 0.01 * s, top1=0.58))
        rows.append(run("caption", "full", "clip", s, rho_acc=0.3, rho_pred=0.08, top1=0.35 + 0.01 * s))
    got = table(rows).loc["template-only CLIP is SL-like"]
    # full: |0.08 - 0.1| = 0.02 ... templates: |0.46+0.01s - 0.46|; the frozen-head run is not part of the trend
    assert "sl_frozen" not in got.loc["trend_rho_pred", "compares"]
    assert got.loc["trend_top1", "effect"] == pytest.approx(np.mean([0.25 - 0.01 * s - 0.02 for s in range(3)]))
    assert got.loc["trend_rho_pred", "effect"] == pytest.approx(np.mean([0.02 - 0.01 * s for s in range(3)]))


def test_imbalance_as_a_difference_in_differences():
    rows = []
    for s in range(3):
        rows += [run("imbalance", "natural", "sl", s, rho_acc_corpus=0.8), run("imbalance", "balanced", "sl", s,
                                                                             rho_acc_corpus=0.3 + 0.01 * s),
                 run("imbalance", "natural", "clip", s, rho_acc_corpus=0.4), run("imbalance", "balanced", "clip", s,
                                                                               rho_acc_corpus=0.3)]
    got = table(rows).loc[("CLIP is robust to imbalance (SL is hurt more)", "rho_acc_corpus")]
    assert got.effect == pytest.approx(np.mean([0.5 - 0.01 * s - 0.1 for s in range(3)]))
    assert got.verdict == "reproduced" and pd.isna(got.paper)


def test_frozen_head_claims_find_their_learners_by_kind_and_options():
    rows = []
    for s in range(3):
        rows.append(run("open_world", "false", "voc_text", s, "sl_sampled_vocab_frozen_text", {"text_head": "clip"},
                        tail_acc=0.3 + 0.01 * s))
        rows.append(run("open_world", "false", "voc_random", s, "sl_sampled_vocab", {"head": "frozen_random"},
                        tail_acc=0.1))
        rows.append(run("open_world", "false", "clip", s, rho_acc=0.5))
        rows.append(run("open_world", "equal_size", "clip", s, rho_acc=0.4 - 0.01 * s))
    got = table(rows)
    frozen = got.loc[("a frozen pretrained text head helps SL", "tail_acc")]
    assert frozen.compares == "open_world=false/voc_text vs open_world=false/voc_random"
    assert frozen.effect == pytest.approx(0.21) and frozen.verdict == "reproduced"
    open_world = got.loc[("open-world concepts help CLIP", "rho_acc")]
    assert open_world.effect == pytest.approx(0.11) and open_world.verdict == "reproduced"


def test_every_claim_is_listed_and_untested_ones_say_so():
    got = table([run("imbalance", "natural", "sl", s) for s in range(2)])
    assert len(got) == sum(len(c.metrics) for c in CLAIMS) and len(CLAIMS) == 8
    assert set(got["verdict"]) == {"not tested"}


def test_readme_results_blocks_are_generated_between_their_studys_markers(tmp_path):
    from tailstudy.readme_results import markers, results_markdown, rewrite

    rows = [run("imbalance", "natural", "sl", s, rho_pred=0.7 + 0.1 * s, rho_acc=0.6, tail_acc=np.nan)
            for s in range(3)]
    rows += [run("imbalance", "natural", "clip", s, rho_pred=0.3, rho_acc=0.2, top1_caption_prompt=0.52)
             for s in range(3)]
    readme = tmp_path / "README.md"
    (d0, d1), (p0, p1) = markers("default"), markers("paper")
    readme.write_text(f"intro\n{d0}\nstale default\n{d1}\nmiddle\n{p0}\nstale paper\n{p1}\noutro\n")
    rewrite(readme, results_markdown(pd.DataFrame(rows), pd.DataFrame()), "paper")
    text = readme.read_text()
    assert "stale default" in text and "stale paper" not in text and text.endswith(f"{p1}\noutro\n")
    # sl rho_pred 0.7, 0.8, 0.9: mean 0.8, sd 0.1 over 3 seeds; CLIP's own-caption prompt top-1; undefined as "–"
    assert "| imbalance = natural | sl | 3 | 0.500 ± 0.000 | – | 0.600 ± 0.000 | 0.800 ± 0.100 | – | – |" in text
    assert "| imbalance = natural | clip | 3 | 0.500 ± 0.000 | 0.520 ± 0.000 |" in text
    assert "| SL is more biased than CLIP | imbalance=natural/sl vs imbalance=natural/clip | rho_pred |" in text


def test_a_study_that_tests_no_claim_gets_no_claims_table():
    """An ablation (e.g. data/studies/prompts.yaml: CLIP alone under three caption rules) tests none of the claims."""
    from tailstudy.readme_results import results_markdown

    rows = [run("name_prefix", level, "clip", s, top1_caption_prompt=0.5) for level in ("true", "false")
            for s in range(2)]
    block = results_markdown(pd.DataFrame(rows), pd.DataFrame())
    assert "| name_prefix = true | clip | 2 |" in block and "| claim" not in block


def test_an_ablation_reads_each_level_against_the_first_paired_by_seed():
    from tailstudy.readme_results import ablation_markdown

    # top-1 of level "b" minus level "a" per seed: 0.1, 0.0, 0.2 -> mean 0.1, sd 0.1, half width t(0.975, 2) 0.1/√3;
    # level "c" has no seed in common with "a" on the sl learner and is left out; seed 3 of "b" has no partner
    top1 = {"a": [0.5, 0.6, 0.7], "b": [0.6, 0.6, 0.9, 0.1]}
    rows = [run("caption", level, "clip", s, top1=v, rho_acc=0.3) for level, vals in top1.items()
            for s, v in enumerate(vals)]
    rows += [run("caption", "c", "clip", s, top1=0.5, rho_acc=0.3 - 0.1 * s) for s in range(3)]
    rows += [run("caption", "a", "sl", 0), run("caption", "c", "sl", 1)]
    half = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    block = ablation_markdown(pd.DataFrame(rows))
    assert f"| caption = b | a | clip | 3 | +0.100 [{0.1 - half:+.3f}, {0.1 + half:+.3f}] | +0.000 [+0.000, +0.000] |" \
        in block
    assert "| caption = c | a | clip | 3 | -0.100 [" in block  # 0.5 against 0.5, 0.6, 0.7
    assert "| caption = c | a | sl |" not in block and "caption = a |" not in block
