"""Small image classifier: Conv-BatchNorm-ReLU blocks, a shuffled DataLoader over a
TensorDataset (in-process loading), one epoch of SGD and an evaluation pass."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)

images = torch.randn(192, 1, 12, 12)
labels = (images.mean(dim=(1, 2, 3)) > 0).long() + (images[:, 0, 0, 0] > 1).long()
dataset = TensorDataset(images, labels)
loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=0,
                    generator=torch.Generator().manual_seed(1))


def conv_block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


model = nn.Sequential(conv_block(1, 8), conv_block(8, 16), nn.Flatten(), nn.Linear(16 * 3 * 3, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

model.train()
total = 0.0
for x, y in loader:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    total += loss.item() * len(y)
print(f"epoch loss {total / len(dataset):.6f}")

model.eval()
correct = 0
with torch.no_grad():
    for x, y in DataLoader(dataset, batch_size=64):
        correct += (model(x).argmax(1) == y).sum().item()
print(f"accuracy {correct}/{len(dataset)}")
bn = model[0][1]
print("running mean:", [round(v, 6) for v in bn.running_mean.tolist()])
print("batches tracked:", bn.num_batches_tracked.item())
