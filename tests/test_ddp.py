"""Data-parallel training under torchrun, on CPU with the gloo backend (the same code path NCCL takes on GPUs)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["sl", "clip"])
def test_two_ranks_train_in_lockstep_and_rank0_writes_the_checkpoint(tmp_path, kind):
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(REPO / "tests" / "helpers" / "ddp_train.py"), kind, str(work), str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    params = [n for n in ranks[0] if "running_" not in n and "num_batches_tracked" not in n]
    for name in params:  # DDP keeps the trained weights identical (BatchNorm running stats are per rank on CPU)
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    ckpt = torch.load(work / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 1
    for name, value in ckpt["model"].items():
        assert torch.equal(value, ranks[0][name])
