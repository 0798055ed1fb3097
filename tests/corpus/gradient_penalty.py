"""WGAN-GP critic update: the gradient penalty needs torch.autograd.grad with
create_graph=True and a double backward; plus a Hessian-vector product."""

import torch
from torch import nn

torch.manual_seed(0)

critic = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.9))
LAMBDA = 10.0


def gradient_penalty(real, fake):
    alpha = torch.rand(real.shape[0], 1)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = critic(mixed)
    (grads,) = torch.autograd.grad(scores, mixed, grad_outputs=torch.ones_like(scores),
                                   create_graph=True)
    return ((grads.norm(2, dim=1) - 1) ** 2).mean()


for step in range(4):
    real = torch.randn(32, 4) + 2
    fake = torch.randn(32, 4)
    gp = gradient_penalty(real, fake)
    loss = critic(fake).mean() - critic(real).mean() + LAMBDA * gp
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step}: critic loss {loss.item():.7f}, penalty {gp.item():.7f}")

# Hessian-vector product of the critic's output w.r.t. its input
x = torch.randn(5, 4, requires_grad=True)
v = torch.randn(5, 4)
(g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
(hvp,) = torch.autograd.grad(g, x, grad_outputs=v)
print("hvp:", [round(t, 6) for t in hvp[0].tolist()])
print("x.grad is None:", x.grad is None)
