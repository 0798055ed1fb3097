"""`.data` changes a value without autograd noticing (course notes 2.2).

Look at: "1 invisible to autograd" in the summary and the check's GT102: `x.data *= 100`
changed `x` without autograd seeing it; here nothing had saved `x` for backward, so the
gradient 2 is still right (with `y = x * x` it would not be).

Tour: gradtrace run --no-svg -o gradtrace-out/tour/12_data examples/tour/12_data.py
Tour: gradtrace check gradtrace-out/tour/12_data
"""

import torch

x = torch.ones(1, requires_grad=True)
y = 2 * x
x.data *= 100
y.backward()
print("x", x.item(), "x.grad", x.grad.item())
