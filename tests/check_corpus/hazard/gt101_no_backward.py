"""A forward-only test of a model whose forward breaks backward: found before backward runs."""
import torch
from torch import nn


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        p = self.lin(x).softmax(-1)
        p[:, 0] = 0  # expect: GT101
        return p


torch.manual_seed(0)
out = Head()(torch.randn(2, 4))
assert out.shape == (2, 3)
