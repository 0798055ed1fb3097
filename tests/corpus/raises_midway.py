"""A training script that fails partway: after two good steps a batch with the wrong
feature count arrives and the input check raises ValueError."""

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)

FEATURES = 7
model = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)


def check_batch(x):
    if x.dim() != 2 or x.shape[1] != FEATURES:
        raise ValueError(f"expected a batch of shape (N, {FEATURES}), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("batch contains NaN or Inf")


batches = [torch.randn(8, FEATURES), torch.randn(8, FEATURES), torch.randn(8, FEATURES + 1)]
for i, x in enumerate(batches):
    check_batch(x)
    loss = F.mse_loss(model(x), x.sum(1, keepdim=True))
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"batch {i}: loss {loss.item():.7f}")

print("not reached")
