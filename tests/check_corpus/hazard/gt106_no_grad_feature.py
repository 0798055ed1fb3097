"""A regulariser computed under no_grad by mistake: its gradient is missing."""
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(4, 2)
x = torch.randn(8, 4)
out = model(x)
with torch.no_grad():
    penalty = model.weight.pow(2).sum()  # expect: GT106
loss = out.pow(2).mean() + 0.01 * penalty
loss.backward()
