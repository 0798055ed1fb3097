"""Adapted from pytorch/examples word_language_model (main.py + model.py) with
the LSTM ``RNNModel``.

A synthetic token stream (vocab 50) replaces Wikitext-2; emsize 16, nhid 16,
2 layers, bptt 8, batch 4; 3 training batches, then ``evaluate()``.

A tracer must get right: ``batchify`` (narrow/view/t/contiguous), ``get_batch``
slicing with ``view(-1)``, Embedding -> Dropout -> 2-layer nn.LSTM -> Dropout ->
Linear, ``init_hidden`` made with ``weight.new_zeros``, ``repackage_hidden``
detaching the (h, c) tuple each batch (so the graph is cut between batches),
``nn.CrossEntropyLoss``/NLL on log_softmax, ``clip_grad_norm_``, the
hand-written SGD update ``p.data.add_(p.grad, alpha=-lr)`` (an in-place write
through ``.data`` that autograd does not see) after ``model.zero_grad()``, and
an evaluation under ``torch.no_grad()``.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)


class RNNModel(nn.Module):
    """Container module with an encoder, a recurrent module, and a decoder."""

    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type in ['LSTM', 'GRU']:
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        else:
            raise ValueError("only LSTM and GRU in this adaptation")
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ValueError('When using the tied flag, nhid must be equal to emsize')
            self.decoder.weight = self.encoder.weight
        self.init_weights()
        self.rnn_type = rnn_type
        self.nhid = nhid
        self.nlayers = nlayers

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        if self.rnn_type == 'LSTM':
            return (weight.new_zeros(self.nlayers, bsz, self.nhid),
                    weight.new_zeros(self.nlayers, bsz, self.nhid))
        return weight.new_zeros(self.nlayers, bsz, self.nhid)


def batchify(data, bsz):
    # Work out how cleanly we can divide the dataset into bsz parts.
    nbatch = data.size(0) // bsz
    # Trim off any extra elements that wouldn't cleanly fit (remainders).
    data = data.narrow(0, 0, nbatch * bsz)
    # Evenly divide the data across the bsz batches.
    data = data.view(bsz, -1).t().contiguous()
    return data.to(device)


def repackage_hidden(h):
    """Wraps hidden states in new Tensors, to detach them from their history."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


def get_batch(source, i):
    seq_len = min(bptt, len(source) - 1 - i)
    data = source[i:i + seq_len]
    target = source[i + 1:i + 1 + seq_len].view(-1)
    return data, target


device = torch.device("cpu")
ntokens = 50
emsize = 16
nhid = 16
nlayers = 2
bptt = 8
lr = 20.0
clip = 0.25
batch_size = 4
eval_batch_size = 2

train_stream = torch.randint(0, ntokens, (3 * bptt * batch_size + batch_size,))
val_stream = torch.randint(0, ntokens, (2 * bptt * eval_batch_size + eval_batch_size,))
train_data = batchify(train_stream, batch_size)
val_data = batchify(val_stream, eval_batch_size)

model = RNNModel('LSTM', ntokens, emsize, nhid, nlayers, dropout=0.2).to(device)
criterion = nn.NLLLoss()


def evaluate(data_source):
    # Turn on evaluation mode which disables dropout.
    model.eval()
    total_loss = 0.
    hidden = model.init_hidden(eval_batch_size)
    with torch.no_grad():
        for i in range(0, data_source.size(0) - 1, bptt):
            data, targets = get_batch(data_source, i)
            output, hidden = model(data, hidden)
            hidden = repackage_hidden(hidden)
            total_loss += len(data) * criterion(output, targets).item()
    return total_loss / (len(data_source) - 1)


def train():
    # Turn on training mode which enables dropout.
    model.train()
    total_loss = 0.
    hidden = model.init_hidden(batch_size)
    for batch, i in enumerate(range(0, train_data.size(0) - 1, bptt)):
        data, targets = get_batch(train_data, i)
        # Starting each batch, we detach the hidden state from how it was previously produced.
        hidden = repackage_hidden(hidden)
        model.zero_grad()
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()

        # `clip_grad_norm` helps prevent the exploding gradient problem in RNNs / LSTMs.
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)

        total_loss += loss.item()
        print(f"| batch {batch} | lr {lr:.2f} | loss {loss.item():.6f}")


train()
val_loss = evaluate(val_data)
print(f"| end of epoch | valid loss {val_loss:.6f} | valid ppl {math.exp(val_loss):.6f}")
