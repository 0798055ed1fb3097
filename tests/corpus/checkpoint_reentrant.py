"""Reentrant activation checkpointing (use_reentrant=True) of dropout MLP stages;
the RNG state is restored for the recomputation so dropout masks match."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

torch.manual_seed(0)

stage_calls = []


class Stage(nn.Module):
    def __init__(self, name, dim):
        super().__init__()
        self.name = name
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Dropout(0.25), nn.Linear(dim, dim))

    def forward(self, x):
        stage_calls.append(self.name)
        return x + self.net(x)


embed = nn.Embedding(20, 24)
stages = nn.ModuleList([Stage("a", 24), Stage("b", 24)])
head = nn.Linear(24, 20)
params = [*embed.parameters(), *stages.parameters(), *head.parameters()]
opt = torch.optim.Adam(params, lr=1e-3)

tokens = torch.randint(0, 20, (8, 6))
for step in range(3):
    h = embed(tokens)
    for stage in stages:
        h = checkpoint(stage, h, use_reentrant=True)
    loss = F.cross_entropy(head(h).flatten(0, 1), tokens.roll(1, dims=1).flatten())
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step}: loss {loss.item():.7f}, stage calls so far {''.join(stage_calls)}")

print("embed grad norm:", f"{embed.weight.grad.norm().item():.6f}")
