"""Adapted from the PyTorch tutorial "Per-sample-gradients" (torch.func:
functional_call + grad + vmap).

A small MLP on a batch of 8 synthetic samples: per-sample gradients computed
twice, by a Python loop of ``torch.autograd.grad`` calls on one-sample batches
and by ``vmap(grad(compute_loss), in_dims=(None, None, 0, 0))``; the two are
compared with ``torch.testing.assert_close``; the gradients' norms are printed.
No training step.

A tracer must get right: eight separate ``torch.autograd.grad`` calls (not
``.backward()``: gradients returned, nothing written to ``.grad``), parameters
detached into dicts, ``torch.func.functional_call`` running the module with
those tensors swapped in for its parameters, ``torch.func.grad`` and
``torch.func.vmap`` transforms (functorch-wrapped tensors, batched ops that run
once for the whole batch), and the ``zip(*...)``/``torch.stack`` regrouping.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

torch.manual_seed(0)


class SimpleMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(20, 32)
        self.fc2 = nn.Linear(32, 16)
        self.fc3 = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        output = F.log_softmax(x, dim=1)
        return output


def loss_fn(predictions, targets):
    return F.nll_loss(predictions, targets)


batch_size = 8
data = torch.randn(batch_size, 20)
targets = torch.randint(10, (batch_size,))

model = SimpleMLP()

predictions = model(data)  # move the entire mini-batch through the model
loss = loss_fn(predictions, targets)
print(f"batch loss: {loss.item():.6f}")


def compute_grad(sample, target):
    sample = sample.unsqueeze(0)  # prepend batch dimension for processing
    target = target.unsqueeze(0)

    prediction = model(sample)
    loss = loss_fn(prediction, target)

    return torch.autograd.grad(loss, list(model.parameters()))


def compute_sample_grads(data, targets):
    """ manually process each sample with per sample gradient """
    sample_grads = [compute_grad(data[i], targets[i]) for i in range(batch_size)]
    sample_grads = zip(*sample_grads)
    sample_grads = [torch.stack(shards) for shards in sample_grads]
    return sample_grads


per_sample_grads = compute_sample_grads(data, targets)

params = {k: v.detach() for k, v in model.named_parameters()}
buffers = {k: v.detach() for k, v in model.named_buffers()}


def compute_loss(params, buffers, sample, target):
    batch = sample.unsqueeze(0)
    targets = target.unsqueeze(0)

    predictions = functional_call(model, (params, buffers), (batch,))
    loss = loss_fn(predictions, targets)
    return loss


ft_compute_grad = grad(compute_loss)
ft_compute_sample_grad = vmap(ft_compute_grad, in_dims=(None, None, 0, 0))
ft_per_sample_grads = ft_compute_sample_grad(params, buffers, data, targets)

for name, per_sample_grad, ft_per_sample_grad in zip(params, per_sample_grads, ft_per_sample_grads.values()):
    torch.testing.assert_close(per_sample_grad, ft_per_sample_grad, atol=3e-3, rtol=1e-5)
    print(f"{name}: shape {tuple(ft_per_sample_grad.shape)} norm {ft_per_sample_grad.norm().item():.6f}")
print("per-sample gradients agree")
