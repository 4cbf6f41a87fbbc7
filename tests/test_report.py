"""The study report: one self-contained HTML page that renders in headless Chromium with every figure loaded; shared
runs counted once; and `tailstudy run` completes while a DuckDB connection holds the old catalog open."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from conftest import cli

SHARED_SPEC = """\
name: shared
corpus: {concepts: 8, open_concepts: 3, samples: 700, open_samples: 60, profile: laion400m, min_count: 8, seed: 0}
evaluate: {per_class: 6}
base: {imbalance: natural, caption: full}
factors:
  caption: [a_cname, full]
learners: [clip, sl]
train: {arch: tiny, epochs: 1, batch_size: 128}
seeds: [0]
"""
CHECK_IMAGES = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-images', imgs.length + ':' + imgs.filter(i => i.complete && i.naturalWidth > 0).length);
});</script></body>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (Debian package `chromium`) when run as root")
        pytest.skip("no chromium on PATH (.ci/run installs it as root on Debian: apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    (root / "shared.yaml").write_text(SHARED_SPEC)
    (root / "ws").mkdir()
    done = cli("run", str(root / "shared.yaml"), "-w", str(root / "ws"))
    assert done.returncode == 0, done.stderr
    return root


@pytest.mark.slow
def test_run_completes_with_the_catalog_held_open(study):
    ws = study / "ws"
    reader = duckdb.connect(str(ws / "catalog.duckdb"), read_only=True)
    reader.execute(f"SET file_search_path = '{ws}'")  # what tailstudy's own connections do
    assert reader.execute("select count(*) from run_metrics").fetchone()[0] == 4
    done = cli("run", str(study / "shared.yaml"), "-w", str(ws), "--force", "report")
    assert done.returncode == 0, done.stderr
    reader.close()


@pytest.mark.slow
def test_report_counts_distinct_training_runs(study):
    report = next((study / "ws" / "report").glob("*/report.html")).read_text()
    # caption levels share the supervised learner's run (it never reads captions): 4 cells, 3 training runs
    assert "3 distinct training runs, evaluated in 4 cells" in report
    assert "same training runs as caption=a_cname" in report
    assert "<img" in report and 'src="figures/' not in report, "figures are embedded, not linked"
    assert all(alt for alt in re.findall(r'<img [^>]*alt="([^"]*)"', report))
    assert len(re.findall(r"<img ", report)) == len(re.findall(r'<img [^>]*alt="[^"]+"', report)) == 3
    ui = next((study / "ws" / "report").glob("*/report_ui.md")).read_text()
    assert ui.count("](data:image/png;base64,") == 3


@pytest.mark.slow
def test_report_renders_in_headless_chromium(study, tmp_path):
    browser = chromium()
    page = tmp_path / "report.html"  # a copy outside the workspace: nothing may be loaded from beside it
    page.write_text(next((study / "ws" / "report").glob("*/report.html")).read_text().replace("</body>", CHECK_IMAGES))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert 'data-images="3:3"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1280,2600", page.as_uri()],
                   capture_output=True, text=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as img:
        colours = img.convert("L").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50, "the screenshot is blank"
    keep = os.environ.get("TAILSTUDY_KEEP_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)


def test_a_level_whose_runs_are_all_drawn_elsewhere_gets_no_empty_panel():
    import io

    import numpy as np
    import pandas as pd
    from PIL import Image

    from tailstudy.figures import acc_vs_freq_figure

    rng = np.random.default_rng(0)
    rows = []
    for cell, learner, run in (("caption=a_cname", "clip", "r1"), ("caption=a_cname", "sl", "r2"),
                               ("caption=full", "sl", "r2"), ("caption=full", "clip", "r3"),
                               ("imbalance=natural", "sl", "r2")):  # sl never reads captions: one run, three levels
        rows += [{"cell": cell, "learner": learner, "run_id": run, "concept_id": c, "train_count": 5 * (c + 1),
                  "acc": float(rng.random())} for c in range(6)]
    png, notes = acc_vs_freq_figure(pd.DataFrame(rows))
    with Image.open(io.BytesIO(png)) as img:
        width = img.size[0]
    assert width == 2 * 430, "two panels: imbalance=natural has nothing of its own to draw"
    assert "imbalance=natural / sl: the same training runs as caption=a_cname (drawn there)" in notes
    assert "caption=full / sl: the same training runs as caption=a_cname (drawn there)" in notes


@pytest.mark.slow
def test_undefined_values_print_as_a_dash(study):
    report = next((study / "ws" / "report").glob("*/report.html")).read_text()
    markdown = next((study / "ws" / "report").glob("*/report.md")).read_text()
    assert "<td>nan</td>" not in report and "| nan |" not in markdown
    assert "<td>–</td>" in report  # e.g. the claims this study cannot test


@pytest.mark.slow
def test_the_corpus_table_shows_the_catalogs_zipf_exponent_under_a_name_that_says_which_fit(study):
    # the figure's legend gives the fit of the ranked body; the table must not show another number under the same name
    ws = study / "ws"
    corpus = next((ws / "report").glob("*/report.md")).read_text().split("## Corpus")[1].strip().splitlines()
    header, row = ([c.strip() for c in line.strip("|").split("|")] for line in (corpus[0], corpus[2]))
    assert "zipf_exponent" not in header
    shown = float(row[header.index("zipf_exponent (all ranks)")])
    with duckdb.connect(str(ws / "catalog.duckdb"), read_only=True) as con:
        con.execute(f"SET file_search_path = '{ws}'")
        assert shown == pytest.approx(con.execute("select zipf_exponent from imbalance").fetchone()[0], abs=5e-4)


def test_reference_corpora_are_the_shipped_tables():
    import numpy as np

    from tailstudy.figures import REFERENCE_CORPORA, reference_corpora
    from tailstudy.paths import REFERENCE_FREQ_DIR

    found = reference_corpora()
    assert list(found) == list(REFERENCE_CORPORA.values())
    for source, label in REFERENCE_CORPORA.items():
        lines = (REFERENCE_FREQ_DIR / f"class_frequency_{source}.txt").read_text(encoding="utf-8").splitlines()
        counts = np.array([float(line.rsplit("\t", 1)[1]) for line in lines if line.strip()])
        assert np.array_equal(found[label], counts), label


@pytest.mark.slow
def test_study_time_sums_each_built_artifact_once(study):
    import json
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "study_time.py"
    ws = study / "ws"
    done = subprocess.run([sys.executable, str(script), str(ws), "--spec", str(study / "shared.yaml"), "--cores", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "not built" not in done.stdout
    rows = {tuple(line.split()[:2]): line.split() for line in done.stdout.splitlines() if line.startswith("train ")}
    manifests = [json.loads(p.read_text()) for p in (ws / "train").glob("*/manifest.json")]
    for learner, runs in (("clip", 2), ("sl", 1)):  # sl never reads captions: both caption levels share its run
        mine = [m for m in manifests if m["learner"] == learner]
        assert len(mine) == runs == int(rows[("train", learner)][2])
        assert float(rows[("train", learner)][3]) == pytest.approx(sum(m["seconds"] for m in mine), abs=0.6)
    total = float(re.search(r"sum: ([\d,]+) process-seconds", done.stdout).group(1).replace(",", ""))
    assert total == pytest.approx(sum(json.loads(p.read_text())["seconds"] for p in ws.glob("*/*/manifest.json")),
                                  abs=1.0)
    missing = subprocess.run([sys.executable, str(script), str(study / "nope")], capture_output=True, text=True,
                             timeout=300)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1 and "nope" in missing.stderr
