"""A loss term built from .data: the path through it is cut."""
import torch

torch.manual_seed(0)
w = torch.randn(3, requires_grad=True)
x = torch.randn(3)
pred = x * w
scale = pred.data.abs().mean()  # expect: GT106
loss = (pred * scale).sum() + scale * w.sum()
loss.backward()
