"""Truncated backprop through time: the hidden state is detached between chunks."""
import torch
from torch import nn

torch.manual_seed(0)
rnn = nn.RNNCell(3, 4)
head = nn.Linear(4, 1)
opt = torch.optim.SGD(list(rnn.parameters()) + list(head.parameters()), lr=0.1)
seq = torch.randn(6, 2, 3)
h = torch.zeros(2, 4)
for chunk in seq.split(2):
    h = h.detach()
    opt.zero_grad()
    for x in chunk:
        h = rnn(x, h)
    head(h).sum().backward()
    opt.step()
