"""Custom initialisation through .data, the way many course notebooks write it."""
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(4, 2)
nn.init.normal_(model.weight.data, std=0.02)
model.bias.data.zero_()
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(8, 4)
opt.zero_grad()
model(x).sum().backward()
opt.step()
