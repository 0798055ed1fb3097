"""nn.TransformerEncoder deep-copies its layer template: the template gets no gradient."""
import torch
from torch import nn

torch.manual_seed(0)
layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
opt = torch.optim.SGD(enc.parameters(), lr=0.01)
x = torch.randn(2, 3, 8)
opt.zero_grad()
enc(x).pow(2).mean().backward()
opt.step()
