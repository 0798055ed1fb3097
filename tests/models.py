"""Small real programs shared by tests (the course notes' examples and a tiny model)."""

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, d_in=4, d_hidden=8, d_out=2):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Square(torch.autograd.Function):
    """x * x with a hand-written backward (2 * x * g): ops inside a custom backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


def training_steps(steps=3, seed=0):
    """A few SGD steps of an MLP; returns the losses and final parameters."""
    torch.manual_seed(seed)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(16, 4)
    target = torch.randint(0, 2, (16,))
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return losses, [p.detach().clone() for p in model.parameters()]


def seed_autograd():
    """Section 2 of the notes; returns the tensors it computes."""
    x = torch.ones(2, 2, requires_grad=True)
    out = ((x + 2) * (x + 2) * 3).mean()
    out.backward()
    g1 = x.grad.clone()
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    z = (2 * x).view(2, 2)
    z.backward(torch.tensor([[1.0, 0.1], [0.01, 0.001]]))
    g2 = x.grad.clone()
    x = torch.tensor(1.0, requires_grad=True)
    y1 = x ** 2
    with torch.no_grad():
        y2 = x ** 3
    (y1 + y2).backward()
    g3 = x.grad.clone()
    x = torch.ones(1, requires_grad=True)
    y = 2 * x
    x.data *= 100
    y.backward()
    return [g1, g2, g3, x.detach().clone(), x.grad.clone()]


def seed_tensors():
    """Section 1 of the notes; returns the tensors it computes."""
    torch.manual_seed(0)
    x = torch.rand(4, 3)
    y = torch.rand(4, 3)
    result = torch.empty(4, 3)
    torch.add(x, y, out=result)
    y.add_(x)
    r = x[0, :]
    r += 1
    v = x.view(12)
    x += 1
    c = torch.clone(x).view(-1, 2)
    t = x.t().reshape(12)
    b = torch.arange(1, 3).view(1, 2) + torch.arange(1, 4).view(3, 1)
    return [x, y, result, r, v, c, t, b, torch.randn(3)]
