"""A hard threshold: the comparison has no derivative, so the scores get no gradient."""
import torch

torch.manual_seed(0)
scores = torch.randn(5, requires_grad=True)
values = torch.randn(5, requires_grad=True)
mask = (scores > 0).float()  # expect: GT107
loss = (mask * values).sum()
loss.backward()
