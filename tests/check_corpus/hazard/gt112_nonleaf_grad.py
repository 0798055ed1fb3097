"""Reading .grad of an intermediate tensor: it is None."""
import warnings

import torch

x = torch.ones(2, requires_grad=True)
h = x * 2
h.sum().backward()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    g = h.grad  # expect: GT112
