"""Fine-tuning: a "pretrained" backbone is frozen (requires_grad_(False), eval-mode
BatchNorm) and only a new classification head is optimised."""

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)

backbone = nn.Sequential(
    nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(),
    nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU())
# pretend pretraining: a few batches through the BatchNorm statistics
with torch.no_grad():
    for _ in range(3):
        backbone(torch.randn(64, 20) * 2 + 1)

backbone.requires_grad_(False)
backbone.eval()
head = nn.Linear(32, 5)
model = nn.Sequential(backbone, head)
before = {k: v.clone() for k, v in backbone.state_dict().items()}

opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
print("trainable:", sum(p.numel() for p in model.parameters() if p.requires_grad))
x = torch.randn(48, 20)
y = torch.randint(0, 5, (48,))

for epoch in range(4):
    head.train()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"epoch {epoch}: loss {loss.item():.7f}")

after = backbone.state_dict()
print("backbone unchanged:", all(torch.equal(before[k], after[k]) for k in before))
print("backbone grads:", [p.grad for p in backbone.parameters()][:2])
print("head grad norm:", round(head.weight.grad.norm().item(), 6))
