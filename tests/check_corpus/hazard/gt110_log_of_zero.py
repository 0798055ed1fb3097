"""A log of a probability that can be zero: the first -inf and NaN."""
import torch

probs = torch.tensor([0.0, 0.5, 0.5])
logp = torch.log(probs)  # expect: GT110
ent = -(probs * logp).sum()
