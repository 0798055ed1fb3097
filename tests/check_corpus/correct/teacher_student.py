"""Distillation: a teacher used only under no_grad, a student trained on its outputs."""
import torch
from torch import nn

torch.manual_seed(0)
teacher = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
student = nn.Linear(4, 3)
opt = torch.optim.SGD(student.parameters(), lr=0.1)
x = torch.randn(16, 4)
for _ in range(2):
    with torch.no_grad():
        soft = teacher(x).softmax(-1)
    opt.zero_grad()
    loss = nn.functional.kl_div(student(x).log_softmax(-1), soft, reduction="batchmean")
    loss.backward()
    opt.step()
