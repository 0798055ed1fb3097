"""Adding noise to the input through .data after the forward: the weight's gradient uses the new input."""
import torch

torch.manual_seed(0)
w = torch.randn(3, requires_grad=True)
x = torch.randn(3)
h = (x * w).sum()
x.data.add_(torch.randn(3))  # expect: GT102
h.backward()
