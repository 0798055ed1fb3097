"""Hooks: module forward-pre / forward / full-backward hooks, a tensor hook that clips
an activation's gradient and a parameter hook; each counts its calls."""

from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)

counts = Counter()
grad_norms = []


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        if h.requires_grad:
            h.register_hook(self.clip_activation_grad)
        h = torch.relu(self.fc2(h))
        return self.fc3(h)

    @staticmethod
    def clip_activation_grad(grad):
        counts["tensor hook"] += 1
        grad_norms.append(round(grad.norm().item(), 6))
        return grad.clamp(-0.01, 0.01)


def pre_hook(module, args):
    counts[f"pre {module.name}"] += 1


def fwd_hook(module, args, output):
    counts[f"forward {module.name}"] += 1


def bwd_hook(module, grad_input, grad_output):
    counts[f"backward {module.name}"] += 1


model = MLP()
handles = []
for name, m in model.named_children():
    m.name = name
    handles += [m.register_forward_pre_hook(pre_hook), m.register_forward_hook(fwd_hook),
                m.register_full_backward_hook(bwd_hook)]
handles.append(model.fc1.weight.register_hook(lambda g: counts.update(["param hook"])))

opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
for step in range(3):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step}: loss {loss.item():.7f}")

with torch.no_grad():
    model(x)
for h in handles:
    h.remove()
loss = F.cross_entropy(model(x), y)
loss.backward()

for key, n in sorted(counts.items()):
    print(f"{key}: {n}")
print("activation grad norms:", grad_norms)
