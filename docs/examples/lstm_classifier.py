"""An LSTM sequence classifier over 100 steps, loss on the last step, in two versions. The data is
batch-first, (batch, steps, features); the LSTM runs time-major, nn.LSTM's default layout.

    gradcheck scan docs/examples/lstm_classifier.py               # PyTorch's default LSTM init
    gradcheck scan docs/examples/lstm_classifier.py:build_chrono  # forget-gate bias ln(T - 1)

With PyTorch's default init the forget gate starts near sigmoid(0) = 0.5, so the cell state keeps about
half of its gradient per step and the first steps get almost none (Jozefowicz et al. 2015). A forget-gate
bias of ln(T - 1) opens the gate to 1 - 1/T (chrono initialization, Tallec & Ollivier 2018).
"""

import math

import torch
from torch import nn

STEPS, FEATURES = 100, 16


class SequenceClassifier(nn.Module):
    def __init__(self, features: int = FEATURES, hidden: int = 64, classes: int = 5):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.lstm(x.transpose(0, 1))  # (steps, batch, features)
        return self.head(out[-1])  # the last step


def build_model():
    return SequenceClassifier()


def build_chrono():
    model = SequenceClassifier()
    h = model.lstm.hidden_size
    with torch.no_grad():
        # PyTorch orders an LSTM's gates input, forget, cell, output: rows [h:2h] are the forget gate.
        # bias_ih and bias_hh are added, so one carries the whole bias and the other is zeroed.
        model.lstm.bias_ih_l0[h : 2 * h] = math.log(STEPS - 1)
        model.lstm.bias_hh_l0[h : 2 * h] = 0.0
    return model


def example_inputs():
    return torch.randn(16, STEPS, FEATURES)
