"""Character-level LSTM language model with a hand-written initialisation
(orthogonal recurrent weights, forget-gate bias 1) and truncated BPTT."""

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)

VOCAB, HIDDEN, LAYERS = 27, 20, 2


class CharLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.lstm = nn.LSTM(HIDDEN, HIDDEN, num_layers=LAYERS, batch_first=True)
        self.head = nn.Linear(HIDDEN, VOCAB)
        self.init_weights()

    def init_weights(self):
        h = self.lstm.hidden_size
        for name, p in self.lstm.named_parameters():
            with torch.no_grad():
                if name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(p)
                    p[:, 0].zero_()  # the first input feature starts disconnected
                elif name.startswith("weight_hh"):
                    for k in range(4):
                        nn.init.orthogonal_(p[k * h:(k + 1) * h])
                else:
                    p.zero_()
                    p[h:2 * h].fill_(1.0)  # forget gate

    def forward(self, x, state=None):
        out, state = self.lstm(self.embed(x), state)
        return self.head(out), state


text = torch.randint(0, VOCAB, (4, 65))
model = CharLM()
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
print("forget bias:", model.lstm.bias_ih_l0[HIDDEN:2 * HIDDEN].sum().item())
print("first column:", model.lstm.weight_ih_l0[:, 0].abs().sum().item())

state = None
for i, start in enumerate(range(0, 64, 16)):
    x, y = text[:, start:start + 16], text[:, start + 1:start + 17]
    logits, state = model(x, state)
    state = tuple(s.detach() for s in state)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    print(f"chunk {i}: loss {loss.item():.7f}")
