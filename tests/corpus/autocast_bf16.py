"""Mixed precision on CPU: a training step under torch.autocast(bfloat16), with the
loss computed in float32 and float32 master weights."""

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)

model = nn.Sequential(
    nn.Conv1d(4, 16, 5, padding=2), nn.GELU(),
    nn.Conv1d(16, 16, 5, padding=2), nn.GELU(),
    nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(16, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
x = torch.randn(16, 4, 32)
y = torch.randint(0, 3, (16,))

for step in range(3):
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logits = model(x)
        probs = logits.softmax(-1)
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step}: logits {logits.dtype}, probs {probs.dtype}, loss {loss.item()!r}")

print("weight dtype:", model[0].weight.dtype, "grad dtype:", model[0].weight.grad.dtype)
with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
    preds = model(x).argmax(-1)
print("predictions:", preds.tolist())
