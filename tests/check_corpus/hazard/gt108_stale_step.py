"""Optimizer steps without zero_grad: every update uses the sum of all earlier gradients."""
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(4, 3)
for _ in range(3):
    model(x).sum().backward()  # expect: GT108
    opt.step()
