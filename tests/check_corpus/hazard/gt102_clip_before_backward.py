"""WGAN-style weight clipping through .data, placed between the forward and backward."""
import torch
from torch import nn

torch.manual_seed(0)
critic = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
opt = torch.optim.RMSprop(critic.parameters(), lr=5e-5)
x = torch.randn(8, 4, requires_grad=True)
opt.zero_grad()
score = critic(x).mean()
for p in critic.parameters():
    p.data.clamp_(-0.01, 0.01)  # expect: GT102
score.backward()
opt.step()
