"""An EMA copy of the weights: deepcopy, freeze, update with copy_ under no_grad."""
import copy

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(4, 2)
ema = copy.deepcopy(model)
ema.requires_grad_(False)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(8, 4)
for _ in range(3):
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    opt.step()
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters()):
            pe.copy_(0.9 * pe + 0.1 * p)
with torch.no_grad():
    val = ema(x).mean()
