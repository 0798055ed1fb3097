"""A model saved, reloaded and evaluated under inference_mode."""
import io

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(8, 4)
opt.zero_grad()
model(x).sum().backward()
opt.step()
buf = io.BytesIO()
torch.save(model.state_dict(), buf)
buf.seek(0)
fresh = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
fresh.load_state_dict(torch.load(buf, weights_only=True))
fresh.eval()
with torch.inference_mode():
    pred = fresh(x).argmax(1)
