"""`view`, `reshape` and `clone` (course notes 1.2.3).

Look at: `v` and `z` are views of `x` (one storage), `c` (the clone) and `t` are not:
`reshape` of the non-contiguous `x.t()` made a copy, so the write `t[0] = 5` never
reaches `x` (GT104).

Tour: gradtrace run --no-svg -o gradtrace-out/tour/04_view_reshape_clone examples/tour/04_view_reshape_clone.py
Tour: gradtrace show gradtrace-out/tour/04_view_reshape_clone --aliases
Tour: gradtrace check gradtrace-out/tour/04_view_reshape_clone
Picture: --view memory
"""

import torch

x = torch.randn(4, 3)
v = x.view(12)
z = x.view(-1, 4)
c = torch.clone(x)
t = x.t().reshape(12)  # a copy: x.t() is not contiguous
t[0] = 5  # x does not change
value = torch.randn(1).item()
