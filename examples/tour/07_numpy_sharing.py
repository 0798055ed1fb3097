"""Tensors and numpy arrays sharing memory (course notes 1.5).

Look at: the "numpy shares memory" rows: `ones` and `from_np` share their buffers with
numpy arrays, so `ones += 1` also changed `ones_np` (GT105); `copied`, made by
`torch.tensor(arr)`, has no such row: it is a copy.

Tour: gradtrace run --no-svg -o gradtrace-out/tour/07_numpy_sharing examples/tour/07_numpy_sharing.py
Tour: gradtrace show gradtrace-out/tour/07_numpy_sharing --aliases
Tour: gradtrace check gradtrace-out/tour/07_numpy_sharing
Picture: --view memory
"""

import numpy as np
import torch

ones = torch.ones(5)
ones_np = ones.numpy()
ones += 1  # the numpy array sees it
arr = np.ones(5)
from_np = torch.from_numpy(arr)
copied = torch.tensor(arr)
total = from_np.sum()
arr += 1  # from_np sees it, copied does not
