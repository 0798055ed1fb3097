"""A numpy buffer changed after torch read it through from_numpy."""
import numpy as np
import torch

a = np.zeros(3)
t = torch.from_numpy(a)
s = t.sum()  # expect: GT105
a[0] = 5
s2 = t.sum()
