"""Zeroing .grad by hand between backward calls, as the course does."""
import torch

x = torch.ones(3, requires_grad=True)
x.sum().backward()
x.grad.zero_()
x.sum().backward()
x.grad.data.zero_()
(2 * x).sum().backward()
assert x.grad[0].item() == 2.0
