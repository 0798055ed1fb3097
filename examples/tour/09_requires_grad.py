"""`requires_grad`, `grad_fn` and `backward()` (course notes 2.1 and 2.2).

Look at: the backward table: the implicit weight 1 for the scalar `out`, and the
gradient 4.5 that reached every element of `x`, as the notes compute (3(x + 2)/2 at x = 1).

Tour: gradtrace run --no-svg -o gradtrace-out/tour/09_requires_grad examples/tour/09_requires_grad.py
Tour: gradtrace show gradtrace-out/tour/09_requires_grad --backward
Picture: --view autograd
"""

import torch

x = torch.ones(2, 2, requires_grad=True)
y = x + 2
z = y * y * 3
out = z.mean()
out.backward()  # the same as out.backward(torch.tensor(1.))
print("x.grad", x.grad.tolist())
