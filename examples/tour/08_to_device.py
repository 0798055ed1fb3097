"""Moving tensors with `.to(device)` (course notes 1.6).

Look at: the moves table's copy column: `.to` to the device a tensor is already on returned
the same tensor (False), a change of dtype copied (True); and the check's GT111 on the
write through the same tensor.

Tour: gradtrace run --no-svg -o gradtrace-out/tour/08_to_device examples/tour/08_to_device.py
Tour: gradtrace show gradtrace-out/tour/08_to_device --moves
Tour: gradtrace check gradtrace-out/tour/08_to_device
"""

import torch

device = torch.device("cpu")  # "cuda:0" in the notes, when there is a GPU
x = torch.tensor([1.0, 2.0])
y = torch.ones_like(x, device=device)
z = x.to(device)  # already there: the same tensor
z.add_(1)  # so this changes x too (on a GPU, z would be a copy)
back = (z + y).to("cpu", torch.double)  # a new dtype: a copy
