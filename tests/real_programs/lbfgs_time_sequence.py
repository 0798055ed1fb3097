"""Adapted from pytorch/examples time_sequence_prediction (generate_sine_wave.py
+ train.py).

Sine waves are generated in memory (numpy, seeded) instead of a saved
``traindata.pt``; 8 waves of length 40, hidden 16. 3 ``optimizer.step(closure)``
calls of LBFGS with ``max_iter=4``, then a prediction with ``future=5``.

A tracer must get right: double precision everywhere (``.double()`` on the
model, float64 data from numpy via ``torch.from_numpy``), two ``nn.LSTMCell``
unrolled in a Python loop over ``input.split(1, dim=1)`` with
``torch.zeros(..., dtype=torch.double)`` initial states, ``torch.cat`` of the
outputs, LBFGS calling the ``closure`` (zero_grad, MSELoss, backward) several
times per ``optimizer.step`` -- so one "step" holds several forward/backward
pairs and the closure's ``print`` --, and the no_grad prediction whose future
loop feeds the model its own output.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim

torch.manual_seed(0)
np.random.seed(0)


class Sequence(nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.hidden = hidden
        self.lstm1 = nn.LSTMCell(1, hidden)
        self.lstm2 = nn.LSTMCell(hidden, hidden)
        self.linear = nn.Linear(hidden, 1)

    def forward(self, input, future=0):
        outputs = []
        h_t = torch.zeros(input.size(0), self.hidden, dtype=torch.double)
        c_t = torch.zeros(input.size(0), self.hidden, dtype=torch.double)
        h_t2 = torch.zeros(input.size(0), self.hidden, dtype=torch.double)
        c_t2 = torch.zeros(input.size(0), self.hidden, dtype=torch.double)

        for input_t in input.split(1, dim=1):
            h_t, c_t = self.lstm1(input_t, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        for i in range(future):  # if we should predict the future
            h_t, c_t = self.lstm1(output, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        outputs = torch.cat(outputs, dim=1)
        return outputs


# generate_sine_wave.py, in memory and small
T = 20
L = 40
N = 8
x = np.empty((N, L), 'int64')
x[:] = np.array(range(L)) + np.random.randint(-4 * T, 4 * T, N).reshape(N, 1)
data = np.sin(x / 1.0 / T).astype('float64')

input = torch.from_numpy(data[2:, :-1])
target = torch.from_numpy(data[2:, 1:])
test_input = torch.from_numpy(data[:2, :-1])
test_target = torch.from_numpy(data[:2, 1:])

seq = Sequence()
seq.double()
criterion = nn.MSELoss()
# use LBFGS as optimizer since we can load the whole data to train
optimizer = optim.LBFGS(seq.parameters(), lr=0.8, max_iter=4)

for i in range(3):
    print('STEP: ', i)

    def closure():
        optimizer.zero_grad()
        out = seq(input)
        loss = criterion(out, target)
        print(f'loss: {loss.item():.6f}')
        loss.backward()
        return loss
    optimizer.step(closure)

# begin to predict, no need to track gradient here
with torch.no_grad():
    future = 5
    pred = seq(test_input, future=future)
    loss = criterion(pred[:, :-future], test_target)
    print(f'test loss: {loss.item():.6f}')
    y = pred.detach().numpy()
print(f'prediction tail: {" ".join(f"{v:.6f}" for v in y[0, -future:])}')
