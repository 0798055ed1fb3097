"""Activation checkpointing (use_reentrant=False) over residual MLP blocks with
BatchNorm; each block reports when it runs, so the recomputation in backward shows."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

torch.manual_seed(0)

runs = {"forward": 0}


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.bn = nn.BatchNorm1d(2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x):
        runs["forward"] += 1
        print(f"  block run {runs['forward']} (grad enabled: {torch.is_grad_enabled()})")
        return x + self.fc2(F.relu(self.bn(self.fc1(x))))


class Net(nn.Module):
    def __init__(self, dim=16, depth=2):
        super().__init__()
        self.inp = nn.Linear(8, dim)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.out = nn.Linear(dim, 1)

    def forward(self, x):
        x = self.inp(x)
        for blk in self.blocks:
            x = checkpoint(blk, x, use_reentrant=False)
        return self.out(x)


model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(32, 8), torch.randn(32, 1)

for step in range(2):
    print(f"step {step}: forward")
    loss = F.mse_loss(model(x), y)
    print(f"step {step}: backward")
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step}: loss {loss.item()!r}")

bn = model.blocks[0].bn
print("block runs:", runs["forward"])
print("num_batches_tracked:", bn.num_batches_tracked.item())
print("running_mean[:3]:", bn.running_mean[:3].tolist())
