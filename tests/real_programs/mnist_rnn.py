"""Adapted from pytorch/examples mnist_rnn/main.py (an LSTM reading MNIST row
by row).

Synthetic 28x28 images; hidden size 32; batch 8; 3 training steps, then a test
pass under no_grad.

A tracer must get right: ``input.reshape(-1, 28, 28)`` into a batch_first
``nn.LSTM`` (one fused op producing output and (h, c)), taking the last time
step ``output[:, -1, :]`` (a view), batch norm over the LSTM output, Dropout (``nn.Dropout`` where the
example has ``nn.Dropout2d``, which warns on 2-D input),
``fc``, ``F.log_softmax`` + ``F.nll_loss``, Adadelta and StepLR.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.optim.lr_scheduler import StepLR

torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(input_size=28, hidden_size=32, batch_first=True)
        self.batchnorm = nn.BatchNorm1d(32)
        # the example uses nn.Dropout2d here, which warns on these 2-D inputs
        # ("dropout2d: Received a 2-D input"); nn.Dropout is what it does anyway
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(32, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, input):
        # Shape of input is (batch_size,1, 28, 28)
        # converting shape of input to (batch_size, 28, 28)
        # as required by RNN when batch_first is set True
        input = input.reshape(-1, 28, 28)
        output, hidden = self.rnn(input)

        # RNN output shape is (seq_len, batch, input_size)
        # Get last output of RNN
        output = output[:, -1, :]
        output = self.batchnorm(output)
        output = self.dropout1(output)
        output = self.fc1(output)
        output = F.relu(output)
        output = self.dropout2(output)
        output = self.fc2(output)
        output = F.log_softmax(output, dim=1)
        return output


def train(model, device, train_loader, optimizer, epoch, max_steps):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        if batch_idx >= max_steps:
            break
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        print(f"Train Epoch: {epoch} batch {batch_idx} Loss: {loss.item():.6f}")


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
            pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
            correct += pred.eq(target.view_as(pred)).sum().item()
    test_loss /= len(test_loader.dataset)
    print(f"Test set: Average loss: {test_loss:.6f}, Accuracy: {correct}/{len(test_loader.dataset)}")


device = torch.device("cpu")
train_set = torch.utils.data.TensorDataset((torch.rand(24, 1, 28, 28) - 0.1307) / 0.3081,
                                           torch.randint(0, 10, (24,)))
test_set = torch.utils.data.TensorDataset((torch.rand(8, 1, 28, 28) - 0.1307) / 0.3081,
                                          torch.randint(0, 10, (8,)))
train_loader = torch.utils.data.DataLoader(train_set, batch_size=8)
test_loader = torch.utils.data.DataLoader(test_set, batch_size=8)

model = Net().to(device)
optimizer = optim.Adadelta(model.parameters(), lr=1.0)
scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
for epoch in range(1, 2):
    train(model, device, train_loader, optimizer, epoch, max_steps=3)
    test(model, device, test_loader)
    scheduler.step()
