"""The memory cost of an operation (course notes 1.4).

Look at: `q = q + p` made a new tensor in new memory (a second `q`, at version v0), while
`q[:] = ...`, `add(out=q)` and `q += p` wrote versions v1, v2 and v3 of that same tensor:
no new memory.

Tour: gradtrace run --no-svg -o gradtrace-out/tour/06_memory_reuse examples/tour/06_memory_reuse.py
Tour: gradtrace show gradtrace-out/tour/06_memory_reuse --aliases
Picture: --view memory
"""

import torch

p = torch.tensor([1, 2])
q = torch.tensor([3, 4])
q = q + p  # new memory
q[:] = q + p  # written into q's memory
torch.add(p, q, out=q)  # so is this
q += p  # and this
