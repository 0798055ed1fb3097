"""Section 2 of the course notes: autograd, weighting vectors, no_grad and .data.

Run: gradtrace run examples/autograd.py
"""

import torch

# 2.1 tensors that track history
x = torch.ones(2, 2, requires_grad=True)
y = x + 2
z = y * y * 3
out = z.mean()

a = torch.randn(2, 2)
a = (a * 3) / (a - 1)
a.requires_grad_(True)
b = (a * a).sum()

# 2.2 gradients: out.backward() is out.backward(torch.tensor(1.))
out.backward()
print("x.grad", x.grad.tolist())

# 2.2.1 a weighting vector: z.backward(v) differentiates l = sum(z * v)
x = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
y = 2 * x
z = y.view(2, 2)
v = torch.tensor([[1.0, 0.1], [0.01, 0.001]], dtype=torch.float)
z.backward(v)
print("x.grad", x.grad.tolist())

# no_grad cuts y2 out of the graph: the gradient is 2, not 5
x = torch.tensor(1.0, requires_grad=True)
y1 = x ** 2
with torch.no_grad():
    y2 = x ** 3
y3 = y1 + y2
y3.backward()
print("x.grad", x.grad.item())

# .data changes values without autograd noticing
x = torch.ones(1, requires_grad=True)
y = 2 * x
x.data *= 100
y.backward()
print("x", x.item(), "x.grad", x.grad.item())
