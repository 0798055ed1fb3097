"""Adapted from pytorch/examples vae/main.py (the MNIST variational autoencoder).

Synthetic pixel intensities in [0, 1] stand in for MNIST; the hidden sizes are
shrunk. One epoch of 3 batches, then a test pass under no_grad.

A tracer must get right: the reparameterization trick (``torch.randn_like``,
``exp``, ``mul``, ``add``), ``F.binary_cross_entropy`` with ``reduction='sum'``
plus the KL term, and the training loop's order
``loss.backward(); train_loss += loss.item(); optimizer.step()`` -- a ``.item()``
read BETWEEN backward and the optimizer step, which must not split or
misattribute the step.
"""
import torch
import torch.utils.data
from torch import nn, optim
from torch.nn import functional as F

torch.manual_seed(0)


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 64)
        self.fc21 = nn.Linear(64, 8)
        self.fc22 = nn.Linear(64, 8)
        self.fc3 = nn.Linear(8, 64)
        self.fc4 = nn.Linear(64, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction='sum')
    # 0.5 * sum(1 + log(sigma^2) - mu^2 - sigma^2)
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


device = torch.device("cpu")
train_data = torch.rand(24, 1, 28, 28)
test_data = torch.rand(8, 1, 28, 28)
train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train_data), batch_size=8)
test_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(test_data), batch_size=8)

model = VAE().to(device)
optimizer = optim.Adam(model.parameters(), lr=1e-3)


def train(epoch):
    model.train()
    train_loss = 0
    for batch_idx, (data,) in enumerate(train_loader):
        data = data.to(device)
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
        print(f"Train Epoch: {epoch} batch {batch_idx} loss {loss.item() / len(data):.6f}")
    print(f"====> Epoch: {epoch} Average loss: {train_loss / len(train_loader.dataset):.6f}")


def test(epoch):
    model.eval()
    test_loss = 0
    with torch.no_grad():
        for data, in test_loader:
            data = data.to(device)
            recon_batch, mu, logvar = model(data)
            test_loss += loss_function(recon_batch, data, mu, logvar).item()
    test_loss /= len(test_loader.dataset)
    print(f"====> Test set loss: {test_loss:.6f}")


for epoch in range(1, 2):
    train(epoch)
    test(epoch)
    with torch.no_grad():
        sample = torch.randn(4, 8).to(device)
        sample = model.decode(sample).cpu()
        print(f"sample mean {sample.mean().item():.6f}")
