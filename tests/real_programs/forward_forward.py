"""Adapted from pytorch/examples mnist_forward_forward/main.py (Hinton's
Forward-Forward algorithm).

Synthetic flattened 28x28 images (batch 32) replace MNIST; two layers of width
32; each layer trains 3 iterations (``num_epochs = 3``), so 6 optimizer steps in
all, 3 per layer; then ``predict`` on the train and test sets.

A tracer must get right: ``Layer`` subclassing ``nn.Linear`` and OWNING its Adam
optimizer (one optimizer per layer, created in ``__init__``), layers held in a
plain Python list (not an ``nn.ModuleList``), ``Net.train``/``Layer.train``
overriding ``nn.Module.train`` with a training loop, local losses with a
``loss.backward()`` per layer on positive and negative data, ``.detach()``
between layers so no gradient crosses them, ``overlay_y_on_x`` writing into a
clone in place (``x_[:, :10] *= 0.0`` and advanced-index assignment), and the
no_grad-free ``predict`` that sums goodness over layers with Python ``sum``.
"""
import torch
import torch.nn as nn
from torch.optim import Adam

torch.manual_seed(0)


def overlay_y_on_x(x, y):
    """Replace the first 10 pixels of data [x] with one-hot-encoded label [y]
    """
    x_ = x.clone()
    x_[:, :10] *= 0.0
    x_[range(x.shape[0]), y] = x.max()
    return x_


class Net(torch.nn.Module):

    def __init__(self, dims):
        super().__init__()
        self.layers = []
        for d in range(len(dims) - 1):
            self.layers += [Layer(dims[d], dims[d + 1]).to(device)]

    def predict(self, x):
        goodness_per_label = []
        for label in range(10):
            h = overlay_y_on_x(x, label)
            goodness = []
            for layer in self.layers:
                h = layer(h)
                goodness += [h.pow(2).mean(1)]
            goodness_per_label += [sum(goodness).unsqueeze(1)]
        goodness_per_label = torch.cat(goodness_per_label, 1)
        return goodness_per_label.argmax(1)

    def train(self, x_pos, x_neg):
        h_pos, h_neg = x_pos, x_neg
        for i, layer in enumerate(self.layers):
            print('training layer', i, '...')
            h_pos, h_neg = layer.train(h_pos, h_neg)


class Layer(nn.Linear):
    def __init__(self, in_features, out_features,
                 bias=True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device, dtype)
        self.relu = torch.nn.ReLU()
        self.opt = Adam(self.parameters(), lr=0.03)
        self.threshold = 2.0
        self.num_epochs = 3

    def forward(self, x):
        x_direction = x / (x.norm(2, 1, keepdim=True) + 1e-4)
        return self.relu(
            torch.mm(x_direction, self.weight.T) +
            self.bias.unsqueeze(0))

    def train(self, x_pos, x_neg):
        for i in range(self.num_epochs):
            g_pos = self.forward(x_pos).pow(2).mean(1)
            g_neg = self.forward(x_neg).pow(2).mean(1)
            # The following loss pushes pos (neg) samples to
            # values larger (smaller) than the self.threshold.
            loss = torch.log(1 + torch.exp(torch.cat([
                -g_pos + self.threshold,
                g_neg - self.threshold]))).mean()
            self.opt.zero_grad()
            # this backward just compute the derivative and hence
            # is not considered backpropagation.
            loss.backward()
            self.opt.step()
            print(f'  iteration {i} loss {loss.item():.6f}')
        return self.forward(x_pos).detach(), self.forward(x_neg).detach()


device = torch.device("cpu")
# synthetic MNIST-like data, normalised and flattened as the example's transforms do
x = ((torch.rand(32, 1, 28, 28) - 0.1307) / 0.3081).view(32, -1)
y = torch.randint(0, 10, (32,))
x_te = ((torch.rand(16, 1, 28, 28) - 0.1307) / 0.3081).view(16, -1)
y_te = torch.randint(0, 10, (16,))

net = Net([784, 32, 32])
x_pos = overlay_y_on_x(x, y)
rnd = torch.randperm(x.size(0))
x_neg = overlay_y_on_x(x, y[rnd])

net.train(x_pos, x_neg)

print(f'train error: {1.0 - net.predict(x).eq(y).float().mean().item():.6f}')
print(f'test error: {1.0 - net.predict(x_te).eq(y_te).float().mean().item():.6f}')
