"""Clamping a reshaped copy: the image itself does not change."""
import torch

torch.manual_seed(0)
img = torch.randn(2, 3, 4)
flat = img.permute(0, 2, 1).reshape(-1)
flat[flat < 0] = 0  # expect: GT104
