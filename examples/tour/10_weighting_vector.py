"""Backward from a non-scalar with a weighting vector (course notes 2.2.1).

Look at: `z.backward(v)` recorded with its weighting vector `v`, and the gradient that
reached `x`: that of l = sum(z * v), namely 2 * v.

Tour: gradtrace run --no-svg -o gradtrace-out/tour/10_weighting_vector examples/tour/10_weighting_vector.py
Tour: gradtrace show gradtrace-out/tour/10_weighting_vector --backward
Picture: --view autograd
"""

import torch

x = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
y = 2 * x
z = y.view(2, 2)
v = torch.tensor([[1.0, 0.1], [0.01, 0.001]], dtype=torch.float)
z.backward(v)  # differentiates l = sum(z * v)
print("x.grad", x.grad.tolist())
