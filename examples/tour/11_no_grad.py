"""`torch.no_grad()` cuts a path out of backward (course notes 2.2).

Look at: the check's GT106: `y2` was computed under `no_grad`, so the gradient of
`x` is 2, not 5.

Tour: gradtrace run --no-svg -o gradtrace-out/tour/11_no_grad examples/tour/11_no_grad.py
Tour: gradtrace check gradtrace-out/tour/11_no_grad
Picture: --view autograd
"""

import torch

x = torch.tensor(1.0, requires_grad=True)
y1 = x ** 2
with torch.no_grad():
    y2 = x ** 3
y3 = y1 + y2
y3.backward()
print("x.grad", x.grad.item())  # 2.0, not 5.0
