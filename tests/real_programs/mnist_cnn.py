"""Adapted from pytorch/examples mnist/main.py (the basic MNIST CNN).

Synthetic 28x28 "digits" stand in for MNIST; sizes are shrunk so it runs in a
second on CPU. It trains 3 batches, then runs ``test()``.

A tracer must get right: Conv2d/max_pool2d/Dropout/Linear modules called from
``forward``, functional relu/flatten/log_softmax, ``F.nll_loss``, the Adadelta
optimizer and the StepLR scheduler stepping once per "epoch", a DataLoader
(num_workers=0, shuffled by a seeded generator) over a TensorDataset, the
``.item()`` calls in logging, and a ``torch.no_grad()`` evaluation that sums the
loss with ``reduction='sum'`` and counts correct predictions with ``argmax``/``eq``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1)
        self.conv2 = nn.Conv2d(8, 16, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(2304, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


def train(model, device, train_loader, optimizer, epoch, max_batches):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        if batch_idx >= max_batches:
            break
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        print(f"Train Epoch: {epoch} batch {batch_idx} loss {loss.item():.6f}")


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    test_loss /= len(test_loader.dataset)
    print(f"Test set: Average loss: {test_loss:.6f}, Accuracy: {correct}/{len(test_loader.dataset)}")


device = torch.device("cpu")
# synthetic, normalised like transforms.Normalize((0.1307,), (0.3081,))
train_images = (torch.rand(32, 1, 28, 28) - 0.1307) / 0.3081
train_labels = torch.randint(0, 10, (32,))
test_images = (torch.rand(16, 1, 28, 28) - 0.1307) / 0.3081
test_labels = torch.randint(0, 10, (16,))

g = torch.Generator()
g.manual_seed(0)
train_loader = DataLoader(TensorDataset(train_images, train_labels), batch_size=8, shuffle=True,
                          num_workers=0, generator=g)
test_loader = DataLoader(TensorDataset(test_images, test_labels), batch_size=8, shuffle=False, num_workers=0)

model = Net().to(device)
optimizer = optim.Adadelta(model.parameters(), lr=1.0)
scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
for epoch in range(1, 2):
    train(model, device, train_loader, optimizer, epoch, max_batches=3)
    test(model, device, test_loader)
    scheduler.step()
print(f"lr after scheduler: {scheduler.get_last_lr()[0]:.6f}")
