"""Gradient accumulation: zero_grad and step every k micro-batches."""
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
k = 2
data = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(4)]
opt.zero_grad()
for i, (x, y) in enumerate(data):
    loss = nn.functional.mse_loss(model(x), y) / k
    loss.backward()
    if (i + 1) % k == 0:
        opt.step()
        opt.zero_grad()
