"""Saved-tensor hooks: counting pack/unpack hooks around a forward/backward, then
torch.autograd.graph.save_on_cpu for activation offloading."""

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)

counts = {"pack": 0, "unpack": 0}
packed_shapes = []


def pack(t):
    counts["pack"] += 1
    packed_shapes.append(tuple(t.shape))
    return t


def unpack(t):
    counts["unpack"] += 1
    return t


model = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 10), nn.Sigmoid(), nn.Linear(10, 1))
x, y = torch.randn(12, 6), torch.randn(12, 1)

with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
    loss = F.mse_loss(model(x), y)
print("after forward:", counts)
loss.backward()
print("after backward:", counts)
print("packed shapes:", packed_shapes)
g1 = model[0].weight.grad.clone()

model.zero_grad()
with torch.autograd.graph.save_on_cpu(pin_memory=False):
    loss2 = F.mse_loss(model(x), y)
loss2.backward()
print("save_on_cpu same loss:", torch.equal(loss, loss2), "same grad:", torch.equal(g1, model[0].weight.grad))
print("counts unchanged:", counts)
print(f"loss {loss.item()!r}")
