"""Adapted from pytorch/examples regression/main.py (fit a random polynomial).

The target polynomial's weights come from the seeded generator; 3 iterations
instead of "until the loss is below 1e-3".

A tracer must get right: ``make_features`` (``unsqueeze`` then ``torch.cat`` of
powers ``x ** i``), a bare ``nn.Linear`` called ``fc``, ``F.smooth_l1_loss``,
``fc.zero_grad()`` (grads set to None), ``output.backward()``, the hand-written
update ``param.data.add_(-0.1 * param.grad)`` -- an in-place write through
``.data``, invisible to autograd --, and ``.item()``/``.view(-1)`` in the report
of the learned function.
"""
import torch
import torch.nn.functional as F

torch.manual_seed(0)

POLY_DEGREE = 4
W_target = torch.randn(POLY_DEGREE, 1) * 5
b_target = torch.randn(1) * 5


def make_features(x):
    """Builds features i.e. a matrix with columns [x, x^2, x^3, x^4]."""
    x = x.unsqueeze(1)
    return torch.cat([x ** i for i in range(1, POLY_DEGREE + 1)], 1)


def f(x):
    """Approximated function."""
    return x.mm(W_target) + b_target.item()


def poly_desc(W, b):
    """Creates a string description of a polynomial."""
    result = 'y = '
    for i, w in enumerate(W):
        result += f'{w:+.2f} x^{i + 1} '
    result += f'{b[0]:+.2f}'
    return result


def get_batch(batch_size=32):
    """Builds a batch i.e. (x, f(x)) pair."""
    random = torch.randn(batch_size)
    x = make_features(random)
    y = f(x)
    return x, y


# Define model
fc = torch.nn.Linear(W_target.size(0), 1)

for batch_idx in range(1, 4):
    # Get data
    batch_x, batch_y = get_batch()

    # Reset gradients
    fc.zero_grad()

    # Forward pass
    output = F.smooth_l1_loss(fc(batch_x), batch_y)
    loss = output.item()

    # Backward pass
    output.backward()

    # Apply gradients
    for param in fc.parameters():
        param.data.add_(-0.1 * param.grad)
    print(f'Loss: {loss:.6f} after {batch_idx} batches')

print('==> Learned function:\t' + poly_desc(fc.weight.view(-1), fc.bias))
print('==> Actual function:\t' + poly_desc(W_target.view(-1), b_target))
