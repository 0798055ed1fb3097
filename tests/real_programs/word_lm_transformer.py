"""Adapted from pytorch/examples word_language_model (main.py + model.py) with
its ``TransformerModel``.

A synthetic token stream (vocab 50) replaces Wikitext-2; emsize 16, 2 heads,
nhid 32, 2 layers, bptt 8, batch 4; 3 training batches, then ``evaluate()``.

A tracer must get right: ``PositionalEncoding`` with a registered buffer ``pe``
(built with arange/exp/sin/cos and sliced per call), ``nn.TransformerEncoder``
over ``nn.TransformerEncoderLayer`` (cloned layers, fast paths off in
training), the causal mask made as the example does,
``torch.log(torch.tril(torch.ones(sz, sz)))`` -- a deliberate ``-inf`` above the
diagonal that is NOT a numerical bug --, the encoder scaled by
``math.sqrt(ninp)``, ``clip_grad_norm_`` and the hand-written SGD update
``p.data.add_(p.grad, alpha=-lr)`` after ``model.zero_grad()``.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)


class PositionalEncoding(nn.Module):
    r"""Inject some information about the relative or absolute position of the tokens in the sequence."""

    def __init__(self, d_model, dropout=0.1, max_len=5000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)

        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        pe = pe.unsqueeze(0).transpose(0, 1)
        self.register_buffer('pe', pe)

    def forward(self, x):
        x = x + self.pe[:x.size(0), :]
        return self.dropout(x)


class TransformerModel(nn.Module):
    """Container module with an encoder, a transformer module, and a decoder.

    Written as the example's earlier version (an nn.Module holding an
    nn.TransformerEncoder) rather than subclassing nn.Transformer, whose
    constructor warns about nested tensors with batch_first=False."""

    def __init__(self, ntoken, ninp, nhead, nhid, nlayers, dropout=0.5):
        super().__init__()
        self.model_type = 'Transformer'
        self.src_mask = None
        self.pos_encoder = PositionalEncoding(ninp, dropout)
        encoder_layers = nn.TransformerEncoderLayer(ninp, nhead, nhid, dropout)
        self.encoder = nn.TransformerEncoder(encoder_layers, nlayers, enable_nested_tensor=False)
        self.input_emb = nn.Embedding(ntoken, ninp)
        self.ninp = ninp
        self.decoder = nn.Linear(ninp, ntoken)

        self.init_weights()

    def _generate_square_subsequent_mask(self, sz):
        return torch.log(torch.tril(torch.ones(sz, sz)))

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.input_emb.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, src, has_mask=True):
        if has_mask:
            device = src.device
            if self.src_mask is None or self.src_mask.size(0) != len(src):
                mask = self._generate_square_subsequent_mask(len(src)).to(device)
                self.src_mask = mask
        else:
            self.src_mask = None

        src = self.input_emb(src) * math.sqrt(self.ninp)
        src = self.pos_encoder(src)
        output = self.encoder(src, mask=self.src_mask)
        output = self.decoder(output)
        return F.log_softmax(output, dim=-1)


def batchify(data, bsz):
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    data = data.view(bsz, -1).t().contiguous()
    return data.to(device)


def get_batch(source, i):
    seq_len = min(bptt, len(source) - 1 - i)
    data = source[i:i + seq_len]
    target = source[i + 1:i + 1 + seq_len].view(-1)
    return data, target


device = torch.device("cpu")
ntokens = 50
emsize = 16
nhead = 2
nhid = 32
nlayers = 2
bptt = 8
lr = 5.0
clip = 0.25
batch_size = 4
eval_batch_size = 2

train_stream = torch.randint(0, ntokens, (3 * bptt * batch_size + batch_size,))
val_stream = torch.randint(0, ntokens, (2 * bptt * eval_batch_size + eval_batch_size,))
train_data = batchify(train_stream, batch_size)
val_data = batchify(val_stream, eval_batch_size)

model = TransformerModel(ntokens, emsize, nhead, nhid, nlayers, dropout=0.2).to(device)
criterion = nn.NLLLoss()


def evaluate(data_source):
    model.eval()
    total_loss = 0.
    with torch.no_grad():
        for i in range(0, data_source.size(0) - 1, bptt):
            data, targets = get_batch(data_source, i)
            output = model(data)
            output = output.view(-1, ntokens)
            total_loss += len(data) * criterion(output, targets).item()
    return total_loss / (len(data_source) - 1)


def train():
    model.train()
    total_loss = 0.
    for batch, i in enumerate(range(0, train_data.size(0) - 1, bptt)):
        data, targets = get_batch(train_data, i)
        model.zero_grad()
        output = model(data)
        output = output.view(-1, ntokens)
        loss = criterion(output, targets)
        loss.backward()

        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)

        total_loss += loss.item()
        print(f"| batch {batch} | lr {lr:.2f} | loss {loss.item():.6f}")


train()
val_loss = evaluate(val_data)
print(f"| end of epoch | valid loss {val_loss:.6f} | valid ppl {math.exp(val_loss):.6f}")
