"""A data-parallel training step written for torch.distributed, that also runs as one process.

Under a launcher (``WORLD_SIZE`` set) it initialises its process group as DDP
scripts do (NCCL when every rank has its own GPU, gloo otherwise), wraps the
model in DistributedDataParallel, and gives each rank its contiguous share of
one fixed batch along dim 0 (rank k gets rows k*n .. (k+1)*n - 1). Alone, it
trains on the full batch.

Run:
  python examples/data_parallel.py
  torchrun --nproc-per-node 2 examples/data_parallel.py
  gradtrace replay --on cpu --on ddp:2 examples/data_parallel.py
  gradtrace replay --on cpu --on ddp:2 examples/data_parallel.py --reduction sum
  gradtrace replay --on cpu --on ddp:2 examples/data_parallel.py --batchnorm
"""

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=2)
parser.add_argument("--batch", type=int, default=16)
parser.add_argument("--reduction", choices=["mean", "sum"], default="mean")
parser.add_argument("--batchnorm", action="store_true", help="put a BatchNorm1d (not synced) in the model")
args = parser.parse_args()

distributed = "WORLD_SIZE" in os.environ
if distributed:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        device = torch.device("cuda", local_rank % gpus)
        torch.cuda.set_device(device)
        backend = "nccl" if gpus >= world else "gloo"  # ranks sharing a GPU: gloo
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend)
else:
    rank, world = 0, 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")


class MLP(nn.Module):
    def __init__(self, batchnorm=False):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.norm = nn.BatchNorm1d(16) if batchnorm else nn.Identity()
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x):
        h = torch.relu(self.norm(self.fc1(x)))
        return self.fc2(h)


torch.manual_seed(0)
model = MLP(args.batchnorm).to(device)
if distributed:
    model = nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
loss_fn = nn.MSELoss(reduction=args.reduction)

# One fixed batch; each rank takes its rows (a DistributedSampler without shuffling,
# in contiguous blocks).
data = torch.Generator().manual_seed(1)
inputs = torch.randn(args.batch, 8, generator=data)
targets = torch.randn(args.batch, 1, generator=data)
per_rank = args.batch // world
x = inputs[rank * per_rank:(rank + 1) * per_rank].to(device)
y = targets[rank * per_rank:(rank + 1) * per_rank].to(device)

for step in range(args.steps):
    opt.zero_grad()
    out = model(x)
    loss = loss_fn(out, y)
    loss.backward()
    opt.step()
    print(f"rank {rank} step {step} loss {loss.item():.6f}")

if distributed:
    dist.destroy_process_group()
