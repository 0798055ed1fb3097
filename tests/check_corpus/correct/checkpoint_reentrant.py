"""Reentrant activation checkpointing: the block's forward runs under no_grad by design."""
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

torch.manual_seed(0)
block = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))
head = nn.Linear(4, 1)
opt = torch.optim.SGD(list(block.parameters()) + list(head.parameters()), lr=0.1)
x = torch.randn(8, 4, requires_grad=True)
opt.zero_grad()
h = checkpoint(block, x, use_reentrant=True)
head(h).sum().backward()
opt.step()
