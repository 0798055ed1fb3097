"""One small GAN: generator and discriminator MLPs, the fake batch detached for the
discriminator step, non-saturating generator loss, two Adam optimizers."""

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)

Z = 8
G = nn.Sequential(nn.Linear(Z, 32), nn.LeakyReLU(0.2), nn.Linear(32, 2))
D = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))


def real_batch(n):
    angle = torch.rand(n) * 2 * torch.pi
    return torch.stack([angle.cos(), angle.sin()], 1) * 2 + 0.05 * torch.randn(n, 2)


for step in range(5):
    real = real_batch(64)
    fake = G(torch.randn(64, Z))

    d_real, d_fake = D(real), D(fake.detach())
    loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
              + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()

    d_out = D(fake)
    loss_g = F.binary_cross_entropy_with_logits(d_out, torch.ones_like(d_out))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    print(f"step {step}: D {loss_d.item():.7f} G {loss_g.item():.7f}")

print("D grads from the G step:", D[0].weight.grad.abs().sum().item() > 0)
