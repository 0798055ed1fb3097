"""A straight-through estimator as a custom autograd.Function."""
import torch


class SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.sign()

    @staticmethod
    def backward(ctx, g):
        return g


torch.manual_seed(0)
w = torch.randn(5, requires_grad=True)
q = SignSTE.apply(w)
loss = (q * torch.arange(5.0)).sum()
loss.backward()
assert w.grad is not None
