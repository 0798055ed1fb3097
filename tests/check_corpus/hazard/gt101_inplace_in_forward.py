"""A module that scales its sigmoid output in place: training it raises."""
import torch
from torch import nn


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        g = torch.sigmoid(self.lin(x))
        g.mul_(2)  # expect: GT101
        return g


torch.manual_seed(0)
model = Gate()
try:
    model(torch.randn(2, 4)).sum().backward()
except RuntimeError:
    pass
