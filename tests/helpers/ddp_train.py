"""Per-rank script for tests/test_ddp.py: trains a tiny learner under torchrun and saves this rank's weights."""
import sys
from pathlib import Path

import torch

from tailstudy.spec import TrainSpec
from tailstudy.train import TrainData, train

kind, work, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
data = TrainData(torch.randint(0, 255, (48, 32, 32, 3), dtype=torch.uint8, generator=g),
                 torch.arange(48) % 4, [f"a {n}" for n in ("tench", "goldfish", "shark", "ray")] * 12)
cfg = TrainSpec(arch="tiny", epochs=2, batch_size=16, device="cpu")
learner, log = train(kind, data, [12] * 4, cfg, 0, work)
import torch.distributed as dist

torch.save({k: v.detach().clone() for k, v in learner.state_dict().items()}, out / f"rank{dist.get_rank()}.pt")
dist.barrier()
dist.destroy_process_group()
