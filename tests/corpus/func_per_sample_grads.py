"""torch.func: per-sample gradients with vmap(grad(...)) over functional_call, checked
against a Python loop, and a vmapped Jacobian."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

torch.manual_seed(0)

model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 3))
params = {k: v.detach() for k, v in model.named_parameters()}
X, Y = torch.randn(10, 5), torch.randint(0, 3, (10,))


def loss_fn(params, x, y):
    logits = functional_call(model, params, (x.unsqueeze(0),))
    return F.cross_entropy(logits, y.unsqueeze(0))


per_sample = vmap(grad(loss_fn), in_dims=(None, 0, 0))(params, X, Y)
print({k: tuple(v.shape) for k, v in per_sample.items()})

worst = 0.0
for i in range(len(X)):
    model.zero_grad()
    F.cross_entropy(model(X[i:i + 1]), Y[i:i + 1]).backward()
    for k, p in model.named_parameters():
        worst = max(worst, (p.grad - per_sample[k][i]).abs().max().item())
print(f"max difference to the loop: {worst:.3e}")

jac = vmap(jacrev(lambda x: model(x)))(X[:4])
print("jacobian shape:", tuple(jac.shape), "norm:", f"{jac.norm().item():.6f}")
clipped = {k: v * (1.0 / v.flatten(1).norm(dim=1).clamp(min=1.0)).view(-1, *[1] * (v.dim() - 1))
           for k, v in per_sample.items()}
print("clipped mean grad norm:", f"{sum(v.mean(0).norm() ** 2 for v in clipped.values()).sqrt().item():.6f}")
