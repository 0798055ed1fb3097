"""Broadcasting (course notes 1.3).

Look at: the input shapes (1, 2) and (3, 1) and the output shape (3, 2) of the addition.

Tour: gradtrace run --no-svg -o gradtrace-out/tour/05_broadcasting examples/tour/05_broadcasting.py
Tour: gradtrace show gradtrace-out/tour/05_broadcasting --ops
"""

import torch

a = torch.arange(1, 3).view(1, 2)
b = torch.arange(1, 4).view(3, 1)
ab = a + b
