"""A norm by hand: sqrt at zero has an infinite derivative, the gradient is NaN."""
import torch

v = torch.zeros(3, requires_grad=True)
n = torch.sqrt((v * v).sum())  # expect: GT110
n.backward()
