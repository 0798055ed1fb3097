"""Tensors: creating them (course notes 1.1).

Look at: one factory op per line, each with the shape it made; `new_ones` and
`randn_like` take `x` as an input (they reuse its dtype and device), and every
assignment to `x` makes a new tensor (at version v0), not a new version of the old one.

Tour: gradtrace run --no-svg -o gradtrace-out/tour/01_creating_tensors examples/tour/01_creating_tensors.py
Tour: gradtrace show gradtrace-out/tour/01_creating_tensors --ops
"""

import torch

x = torch.rand(4, 3)
x = torch.zeros(4, 3, dtype=torch.long)
x = torch.tensor([5, 5, 3])
x = x.new_ones(4, 3, dtype=torch.double)
x = torch.randn_like(x, dtype=torch.float)
e = torch.empty(4, 3)
