"""Normalising a batch after .to(device): on the CPU it is the same tensor."""
import torch

device = "cpu"
raw = torch.ones(4)
batch = raw.to(device)  # expect: GT111
batch.sub_(batch.mean())
