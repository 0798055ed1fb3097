"""Centring one row in place through a view also changes the batch."""
import torch

torch.manual_seed(0)
batch = torch.randn(3, 4)
row = batch[0]
row -= row.mean()  # expect: GT103:info
