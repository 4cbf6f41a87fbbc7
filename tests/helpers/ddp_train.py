"""Per-rank script for tests/test_ddp.py: trains a tiny learner under torchrun on real shards and saves this rank's
weights."""
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
sys.path.insert(0, str(Path(__file__).resolve().parent))  # not implied: tailstudy's entry points set PYTHONSAFEPATH
from tiny_shards import shard_data  # noqa: E402

from tailstudy.spec import TrainSpec
from tailstudy.train import train

kind, work, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
torch.set_num_threads(1)
images = np.random.default_rng(0).integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
rank = int(os.environ["RANK"])
data = shard_data(out / f"shards-{rank}", images, np.arange(48) % 4,  # each rank writes the same shards
                  [f"a {n}" for n in ("tench", "goldfish", "shark", "ray")] * 12)
cfg = TrainSpec(arch="tiny", epochs=2, batch_size=16, device="cpu")
learner, log = train(kind, data, [12] * 4, cfg, 0, work)

torch.save({k: v.detach().clone() for k, v in learner.state_dict().items()}, out / f"rank{dist.get_rank()}.pt")
dist.barrier()
dist.destroy_process_group()
