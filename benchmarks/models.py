"""The benchmark's models, defined here so the benchmark downloads nothing.

``resnet18``: the CIFAR variant of ResNet-18 (3x3 stem, no max-pool, four stages of
two basic blocks, 64-128-256-512 channels), for 3x32x32 inputs.

``gpt``: a small decoder-only transformer in the style of nanoGPT (token and
position embeddings, pre-norm blocks with explicit masked attention and a GELU MLP,
tied output head). The attention is written out op by op (no fused
``scaled_dot_product_attention``), as in most training code people trace.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# -- ResNet-18 (CIFAR) -----------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 64):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        layers = []
        c_in = w
        for i, c in enumerate((w, 2 * w, 4 * w, 8 * w)):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(c_in, c, stride), BasicBlock(c, c, 1)))
            c_in = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.linear = nn.Linear(8 * w, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet18(width: int = 64) -> ResNet18:
    return ResNet18(width=width)


# -- small GPT ---------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, block: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.register_buffer("mask", torch.tril(torch.ones(block, block)).view(1, 1, block, block))

    def forward(self, x):
        b, t, d = x.size()
        q, k, v = self.qkv(x).split(d, dim=2)
        h = self.heads
        q = q.view(b, t, h, d // h).transpose(1, 2)
        k = k.view(b, t, h, d // h).transpose(1, 2)
        v = v.view(b, t, h, d // h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask[:, :, :t, :t] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = att @ v
        y = y.transpose(1, 2).contiguous().view(b, t, d)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, block: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads, block)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        x = x + self.proj(F.gelu(self.fc(self.ln2(x))))
        return x


class GPT(nn.Module):
    def __init__(self, vocab: int = 512, block: int = 64, layers: int = 4, d: int = 128,
                 heads: int = 4):
        super().__init__()
        self.block = block
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(block, d)
        self.blocks = nn.ModuleList(Block(d, heads, block) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight  # tied, as in GPT-2

    def forward(self, idx, targets=None):
        b, t = idx.size()
        pos = torch.arange(t, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for blk in self.blocks:
            x = blk(x)
        logits = self.head(self.ln_f(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def gpt(layers: int = 4, d: int = 128, block: int = 64, vocab: int = 512) -> GPT:
    return GPT(vocab=vocab, block=block, layers=layers, d=d)


# -- one training step -----------------------------------------------------------------


def make(name: str, batch: int = 4, device: str = "cpu", tiny: bool = False, seed: int = 0):
    """Return ``(model, step)`` where ``step()`` runs one forward and backward pass
    and ``forward()`` (an attribute of ``step``) runs the forward pass alone."""
    torch.manual_seed(seed)
    if name == "resnet18":
        model = resnet18(width=8 if tiny else 64).to(device)
        size = 8 if tiny else 32
        x = torch.randn(batch, 3, size, size, device=device)
        y = torch.randint(0, 10, (batch,), device=device)

        def forward():
            return model(x)

        def step():
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

    elif name == "gpt":
        t = 8 if tiny else 64
        model = gpt(layers=1 if tiny else 4, d=32 if tiny else 128, block=t,
                    vocab=64 if tiny else 512).to(device)
        idx = torch.randint(0, model.wte.num_embeddings, (batch, t), device=device)
        tgt = torch.randint(0, model.wte.num_embeddings, (batch, t), device=device)

        def forward():
            return model(idx)

        def step():
            loss = model(idx, tgt)
            loss.backward()
            return loss

    else:
        raise ValueError(f"unknown model {name!r}")
    model.train()
    step.forward = forward
    step.model = model
    step.inputs = (x,) if name == "resnet18" else (idx,)
    return model, step
