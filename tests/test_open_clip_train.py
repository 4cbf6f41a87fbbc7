"""The locked environment runs open_clip's own trainer on a corpus's webdataset shards (webdataset pinned to what
open_clip_train 3.3.0 supports; 0.2.111 failed with KeyError: 'fname'), with our tiny config via `local-dir:`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_open_clip_train_runs_two_steps_on_a_corpus_s_shards(tmp_path: Path):
    from tailstudy.corpus.synthetic import generate
    from tailstudy.models.towers import open_clip_config_dir
    from tailstudy.spec import CorpusSpec, EvaluateSpec

    generate(CorpusSpec(concepts=4, open_concepts=0, samples=120, open_samples=0, profile="uniform", min_count=1),
             EvaluateSpec(per_class=1), tmp_path / "corpus")
    config = open_clip_config_dir("tiny", tmp_path / "tiny")
    cmd = [sys.executable, "-m", "open_clip_train.main", "--dataset-type", "webdataset",
           "--train-data", str(tmp_path / "corpus" / "shards" / "train-{00000..00000}.tar"),
           "--train-num-samples", "64", "--model", f"local-dir:{config}", "--batch-size", "32", "--epochs", "1",
           "--workers", "1", "--device", "cpu", "--logs", str(tmp_path / "logs"), "--name", "smoke",
           "--report-to", "", "--save-frequency", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    log = (tmp_path / "logs" / "smoke" / "out.log").read_text() if (tmp_path / "logs" / "smoke").is_dir() else ""
    assert run.returncode == 0, run.stderr[-3000:] + log[-3000:]
    assert "Train Epoch: 0 [64/64 (100%)]" in log, log[-3000:]
    assert (tmp_path / "logs" / "smoke" / "checkpoints" / "epoch_1.pt").is_file()
