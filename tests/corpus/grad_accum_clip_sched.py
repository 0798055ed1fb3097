"""Gradient accumulation over micro-batches, gradient-norm clipping and a OneCycle
learning-rate schedule for a small regression MLP."""

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)

ACCUM, MICRO, STEPS = 4, 8, 5

model = nn.Sequential(nn.Linear(10, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 1))
opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.01)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-2, total_steps=STEPS)
w_true = torch.randn(10, 1)

for step in range(STEPS):
    opt.zero_grad(set_to_none=True)
    running = 0.0
    for micro in range(ACCUM):
        x = torch.randn(MICRO, 10)
        y = x @ w_true + 0.1 * torch.randn(MICRO, 1)
        loss = F.mse_loss(model(x), y) / ACCUM
        loss.backward()
        running += loss.item()
    norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    opt.step()
    sched.step()
    print(f"step {step}: loss {running:.6f} grad norm {norm.item():.6f} lr {sched.get_last_lr()[0]:.6e}")
