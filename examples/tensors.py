"""Section 1 of the course notes: creating tensors, operations, memory, numpy, devices.

Run: gradtrace run examples/tensors.py
"""

import numpy as np
import torch

torch.manual_seed(0)

# 1.1 creating tensors
x = torch.rand(4, 3)
x = torch.zeros(4, 3, dtype=torch.long)
x = torch.tensor([5, 5, 3])
x = x.new_ones(4, 3, dtype=torch.double)
x = torch.randn_like(x, dtype=torch.float)
e = torch.empty(4, 3)
shape = x.shape
table = [torch.eye(3), torch.arange(0, 6, 2), torch.linspace(0, 1, 5), torch.normal(0.0, 1.0, (2,)),
         torch.randperm(5), torch.ones(2), torch.zeros(2)]

# 1.2.1 addition
y = torch.rand(4, 3)
s1 = x + y
s2 = torch.add(x, y)
result = torch.empty(5, 3)
torch.add(x, y, out=result)  # PyTorch resizes the 5x3 `out` to 4x3
y.add_(x)

# 1.2.2 indexing shares memory
r = x[0, :]
r += 1

# 1.2.3 reshaping
v = x.view(12)
z = x.view(-1, 4)
x += 1
c = torch.clone(x)
c = c.view(-1, 2)
x -= 1
t = x.t().reshape(12)  # a copy: x.t() is not contiguous
n = torch.randn(1)
value = n.item()

# 1.3 broadcasting
a = torch.arange(1, 3).view(1, 2)
b = torch.arange(1, 4).view(3, 1)
ab = a + b

# 1.4 memory cost of operations
p = torch.tensor([1, 2])
q = torch.tensor([3, 4])
q = q + p  # new memory
q[:] = q + p  # written into q's memory
torch.add(p, q, out=q)
q += p

# 1.5 numpy
ones = torch.ones(5)
ones_np = ones.numpy()
ones += 1  # the numpy array sees it
arr = np.ones(5)
from_np = torch.from_numpy(arr)
copied = torch.tensor(arr)
arr += 1  # from_np sees it, copied does not
check = from_np * 1

# 1.6 tensors on a GPU
if torch.cuda.is_available():
    device = torch.device("cuda:0")
    g = torch.ones_like(p, device=device)
    p = p.to(device)
    pg = p + g
    back = pg.to("cpu", torch.double)
same = p.to(p.device)  # no copy: the same tensor
as_double = p.to("cpu", torch.double)
print("ok", float(from_np.sum()), value == value)
