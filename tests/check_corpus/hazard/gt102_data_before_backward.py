"""Scaling a weight through .data between forward and backward: a silently wrong gradient."""
import torch

torch.manual_seed(0)
w = torch.randn(3, requires_grad=True)
x = torch.randn(3, requires_grad=True)
y = (x * w).sum()
w.data.mul_(0.5)  # expect: GT102
y.backward()
