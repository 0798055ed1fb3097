"""DQN: a target network (a copy) used under no_grad, synced with load_state_dict."""
import copy

import torch
from torch import nn

torch.manual_seed(0)
q = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
target = copy.deepcopy(q)
opt = torch.optim.Adam(q.parameters(), lr=1e-3)
s, a, r, s2 = torch.randn(8, 4), torch.randint(0, 2, (8,)), torch.randn(8), torch.randn(8, 4)
for step in range(3):
    with torch.no_grad():
        y = r + 0.99 * target(s2).max(1).values
    qa = q(s).gather(1, a[:, None]).squeeze(1)
    loss = nn.functional.smooth_l1_loss(qa, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 2 == 1:
        target.load_state_dict(q.state_dict())
