"""Indexing gives a view that shares memory (course notes 1.2.2).

Look at: `r` is a view of `x` (one storage), and the write `r += 1` makes a new
version of both `r` and `x`.

Tour: gradtrace run --no-svg -o gradtrace-out/tour/03_indexing_views examples/tour/03_indexing_views.py
Tour: gradtrace show gradtrace-out/tour/03_indexing_views --aliases
Picture: --view memory
"""

import torch

x = torch.zeros(4, 3)
r = x[0, :]
r += 1  # x[0] changes too
