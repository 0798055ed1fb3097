"""An out= buffer of the wrong shape: PyTorch resizes it."""
import warnings

import torch

x, y = torch.rand(4, 3), torch.rand(4, 3)
result = torch.empty(5, 3)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.add(x, y, out=result)  # expect: GT109
