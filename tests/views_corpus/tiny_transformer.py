"""A tiny transformer (the model of issue 10): a 2-layer nn.TransformerEncoder, one
forward and one backward pass."""

import torch
from torch import nn


class TinyTransformer(nn.Module):
    def __init__(self, vocab=50, d=32, heads=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens):
        return self.head(self.encoder(self.embed(tokens)))


torch.manual_seed(0)
model = TinyTransformer()
tokens = torch.randint(0, 50, (2, 6))
logits = model(tokens)
loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
loss.backward()
