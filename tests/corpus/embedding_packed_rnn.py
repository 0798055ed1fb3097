"""Sentence classification and tagging over padded token batches.

Embedding with a padding index, a packed bidirectional LSTM for the sentence label and
a packed GRU for per-token tags (padded positions ignored by the loss)."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

torch.manual_seed(0)

PAD = 0
VOCAB, EMB, HIDDEN, CLASSES, TAGS = 40, 12, 16, 3, 5
BATCH, MAX_LEN = 8, 10


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMB, padding_idx=PAD)
        self.encoder = nn.LSTM(EMB, HIDDEN, batch_first=True, bidirectional=True)
        self.tagger = nn.GRU(EMB, HIDDEN, batch_first=True)
        self.classify = nn.Linear(2 * HIDDEN, CLASSES)
        self.tag = nn.Linear(HIDDEN, TAGS)

    def forward(self, tokens, lengths):
        x = self.embed(tokens)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.encoder(packed)
        sentence = self.classify(torch.cat([h[-2], h[-1]], dim=1))
        out, _ = self.tagger(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])
        return sentence, self.tag(out)


def make_batch():
    lengths = torch.randint(2, MAX_LEN + 1, (BATCH,))
    tokens = torch.randint(1, VOCAB, (BATCH, MAX_LEN))
    mask = torch.arange(MAX_LEN)[None, :] < lengths[:, None]
    tokens = tokens.masked_fill(~mask, PAD)
    tags = torch.randint(0, TAGS, (BATCH, MAX_LEN)).masked_fill(~mask, -100)
    return tokens, lengths, torch.randint(0, CLASSES, (BATCH,)), tags


model = Tagger()
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
print("padding row is zero:", bool((model.embed.weight[PAD] == 0).all()))

for step in range(4):
    tokens, lengths, labels, tags = make_batch()
    sentence_logits, tag_logits = model(tokens, lengths)
    loss = F.cross_entropy(sentence_logits, labels) + F.cross_entropy(
        tag_logits.reshape(-1, TAGS), tags.reshape(-1), ignore_index=-100)
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step}: loss={loss.item()!r}")

print("padding row grad is zero:", bool((model.embed.weight.grad[PAD] == 0).all()))
print("padding row still zero:", bool((model.embed.weight[PAD] == 0).all()))
