"""zero_grad(set_to_none=False): the gradients are zeroed in place."""
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(3, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(4, 3)
for _ in range(3):
    opt.zero_grad(set_to_none=False)
    model(x).sum().backward()
    opt.step()
