"""torch.compile with the eager backend: a helper compiled at import time (before any
tensor exists) and called later, and a compiled model trained for a few steps."""

import torch


@torch.compile(backend="eager")
def smooth_l1(pred, target, beta: float = 0.5):
    diff = (pred - target).abs()
    return torch.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta).mean()


from torch import nn  # noqa: E402

torch.manual_seed(0)


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU())
        self.out = nn.Linear(24, 2)

    def forward(self, x):
        return self.out(self.body(x))


model = Regressor()
compiled = torch.compile(model, backend="eager")
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(32, 6), torch.randn(32, 2)

for step in range(3):
    loss = smooth_l1(compiled(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step}: loss {loss.item()!r}")

with torch.no_grad():
    print("eager and compiled agree:", torch.equal(model(x), compiled(x)))
