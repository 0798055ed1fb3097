"""A plain MLP classifier trained with Adam (amsgrad) in mini-batches, with dropout,
an early-stopping style best-state copy and a final evaluation."""

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)
rng = np.random.default_rng(0)

features = rng.normal(size=(200, 12)).astype(np.float32)
targets = (features[:, :3].sum(1) > 0).astype(np.int64)
X, Y = torch.from_numpy(features), torch.from_numpy(targets)

model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2))
opt = torch.optim.Adam(model.parameters(), lr=5e-3, amsgrad=True)
best_loss, best_state = float("inf"), None

for epoch in range(3):
    model.train()
    perm = torch.randperm(len(X))
    for i in range(0, len(X), 50):
        idx = perm[i:i + 50]
        loss = F.cross_entropy(model(X[idx]), Y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        val = F.cross_entropy(model(X), Y).item()
    if val < best_loss:
        best_loss, best_state = val, copy.deepcopy(model.state_dict())
    print(f"epoch {epoch}: train {loss.item():.7f} val {val:.7f}")

model.load_state_dict(best_state)
with torch.no_grad():
    acc = (model(X).argmax(1) == Y).float().mean().item()
print(f"best val {best_loss:.7f} acc {acc:.3f}")
