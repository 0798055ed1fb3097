"""An encoder whose output is detached before the head: the encoder is never trained."""
import torch
from torch import nn

torch.manual_seed(0)
enc = nn.Linear(4, 8)
head = nn.Linear(8, 2)
opt = torch.optim.SGD(list(enc.parameters()) + list(head.parameters()), lr=0.1)
x = torch.randn(8, 4)
opt.zero_grad()
feats = enc(x).detach()  # expect: GT106:info GT107
head(feats).sum().backward()
opt.step()
