"""torch.func.grad of a loss, used as a penalty: a functional transform."""
import torch
from torch.func import grad

w = torch.randn(3, requires_grad=True)
x = torch.randn(3)


def f(v):
    return (v * x).sin().sum()


g = grad(f)(w)
loss = f(w) + g.pow(2).sum()
loss.backward()
