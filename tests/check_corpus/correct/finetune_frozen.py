"""Fine-tuning a head on a frozen encoder."""
import torch
from torch import nn

torch.manual_seed(0)
enc = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
head = nn.Linear(8, 2)
for p in enc.parameters():
    p.requires_grad = False
opt = torch.optim.SGD(head.parameters(), lr=0.1)
x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
for _ in range(2):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(head(enc(x)), y)
    loss.backward()
    opt.step()
