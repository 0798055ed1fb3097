"""A bias applied under no_grad: it never gets a gradient."""
import torch

torch.manual_seed(0)
w = torch.randn(3, requires_grad=True)
b = torch.zeros(3, requires_grad=True)
x = torch.randn(3)
opt = torch.optim.SGD([w, b], lr=0.1)
with torch.no_grad():
    shifted = x + b  # expect: GT106 GT107
loss = (shifted * w).sum()
loss.backward()
opt.step()
