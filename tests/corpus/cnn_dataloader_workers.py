"""The image classifier again, loading batches in two worker processes
(the usual `if __name__ == "__main__":` guard), with AdamW and dropout."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def train_epoch(model, loader, opt):
    model.train()
    losses = []
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


if __name__ == "__main__":
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(160, 3, 8, 8), torch.randint(0, 4, (160,)))
    loader = DataLoader(data, batch_size=32, shuffle=True, drop_last=True, num_workers=2,
                        generator=torch.Generator().manual_seed(2))
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for epoch in range(2):
        losses = train_epoch(model, loader, opt)
        print(f"epoch {epoch}: {len(losses)} batches, mean loss {sum(losses) / len(losses):.6f}")
    print("last losses:", [f"{v:.6f}" for v in losses[-2:]])
    print("bn var:", round(model.features[4].running_var.sum().item(), 5))
