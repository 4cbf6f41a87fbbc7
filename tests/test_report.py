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
