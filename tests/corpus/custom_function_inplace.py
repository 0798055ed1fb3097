"""Custom autograd Functions: an in-place leaky clamp (ctx.mark_dirty) and a swish that
saves its input with ctx.save_for_backward; gradcheck'd, then used in training."""

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)


class InplaceLeaky(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, slope):
        negative = x < 0
        x.mul_(torch.where(negative, slope, 1.0))
        ctx.mark_dirty(x)
        ctx.save_for_backward(negative)
        ctx.slope = slope
        return x

    @staticmethod
    def backward(ctx, grad):
        (negative,) = ctx.saved_tensors
        return grad * torch.where(negative, ctx.slope, 1.0), None


class Swish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * (s + x * s * (1 - s))


check_in = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
print("gradcheck leaky:", torch.autograd.gradcheck(lambda t: InplaceLeaky.apply(t.clone(), 0.1), (check_in,)))
print("gradcheck swish:", torch.autograd.gradcheck(Swish.apply, (check_in,)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 2)

    def forward(self, x):
        h = InplaceLeaky.apply(self.fc1(x), 0.05)
        h = Swish.apply(self.fc2(h))
        return self.fc3(h)


model = Net()
opt = torch.optim.Adam(model.parameters(), lr=5e-3)
x, y = torch.randn(24, 6), torch.randint(0, 2, (24,))
for step in range(4):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step}: {loss.item()!r}")

h = model.fc1(x)
out = InplaceLeaky.apply(h, 0.05)
print("same object:", out is h, "version:", h._version)
