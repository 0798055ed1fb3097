"""A small MLP trained for a few steps, in one process: a replay example.

It asks for "cuda" when a GPU is there, so `gradtrace replay --on cpu --on cuda`
runs it on both; dropout draws random numbers, which replay's seeded mode makes
the same on every target.

Run:
  python examples/train_mlp.py --steps 3
  gradtrace run examples/train_mlp.py --steps 3
  gradtrace replay --on cpu --on cpu64 examples/train_mlp.py
  gradtrace replay --on cpu --on cuda examples/train_mlp.py
"""

import argparse

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--reduction", choices=["mean", "sum"], default="mean")
parser.add_argument("--dropout", type=float, default=0.1)
args = parser.parse_args()

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(0)


class MLP(nn.Module):
    def __init__(self, dropout):
        super().__init__()
        self.fc1 = nn.Linear(10, 32)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(32, 1)

    def forward(self, x):
        return self.fc2(self.drop(torch.tanh(self.fc1(x))))


model = MLP(args.dropout).to(device)
opt = torch.optim.SGD(model.parameters(), lr=0.05)
loss_fn = nn.MSELoss(reduction=args.reduction)

x = torch.randn(args.batch, 10).to(device)
w_true = torch.randn(10, 1).to(device)
y = x @ w_true + 0.1

for step in range(args.steps):
    opt.zero_grad()
    pred = model(x)
    loss = loss_fn(pred, y)
    loss.backward()
    opt.step()
    print(f"step {step} loss {loss.item():.6f}")
