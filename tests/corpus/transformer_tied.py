"""A tiny decoder-only transformer: MultiheadAttention with a causal mask, pre-LayerNorm,
and the output projection tied to the token embedding. Trains a few steps and samples."""

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)

VOCAB, D, HEADS, LAYERS, CTX = 32, 32, 4, 2, 16


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1 = nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, HEADS, dropout=0.1, batch_first=True)
        self.ln2 = nn.LayerNorm(D)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D), nn.Dropout(0.1))

    def forward(self, x, mask):
        h = self.ln1(x)
        a, _ = self.attn(h, h, h, attn_mask=mask, need_weights=False)
        x = x + a
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, D)
        self.pos = nn.Parameter(torch.zeros(CTX, D))
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(D)
        self.lm_head = nn.Linear(D, VOCAB, bias=False)
        self.lm_head.weight = self.tok.weight  # weight tying
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        self.register_buffer("mask", torch.triu(torch.ones(CTX, CTX, dtype=torch.bool), 1))

    def forward(self, idx):
        T = idx.shape[1]
        x = self.tok(idx) + self.pos[:T]
        for blk in self.blocks:
            x = blk(x, self.mask[:T, :T])
        return self.lm_head(self.ln_f(x))


model = TinyGPT()
print("parameters:", sum(p.numel() for p in model.parameters()))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
data = torch.randint(0, VOCAB, (6, CTX + 1))

for step in range(3):
    logits = model(data[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), data[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    print(f"step {step} loss {loss.item():.6f}")

print("tied:", model.lm_head.weight is model.tok.weight)
model.eval()
idx = data[:1, :4]
with torch.no_grad():
    for _ in range(6):
        nxt = model(idx[:, -CTX:])[:, -1].argmax(-1, keepdim=True)
        idx = torch.cat([idx, nxt], dim=1)
print("sample:", idx.tolist())
