"""In-place ops and `out=` (course notes 1.2.1).

Look at: the three additions told apart by category (`compute`, `out`, `inplace`),
and the check's GT109: the 5x3 `out=` tensor was silently resized to 4x3.

Tour: gradtrace run --no-svg -o gradtrace-out/tour/02_inplace_and_out examples/tour/02_inplace_and_out.py
Tour: gradtrace check gradtrace-out/tour/02_inplace_and_out
"""

import torch

x = torch.rand(4, 3)
y = torch.rand(4, 3)
s = x + y
s2 = torch.add(x, y)
result = torch.empty(5, 3)
torch.add(x, y, out=result)  # PyTorch resizes the 5x3 `out` to 4x3 (and warns)
y.add_(x)  # in-place: a trailing _ changes y
