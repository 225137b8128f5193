"""A vanilla tanh RNN classifier over 60 steps, loss on the last step: its weight-gradient norms look
fine, but the gradient reaching the early time steps vanishes.

    gradcheck scan examples/vanishing_rnn.py
"""

import torch
from torch import nn


class SequenceClassifier(nn.Module):
    def __init__(self, features: int = 16, hidden: int = 64, classes: int = 5):
        super().__init__()
        self.rnn = nn.RNN(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def build_model():
    return SequenceClassifier()


def example_inputs():
    return torch.randn(16, 60, 16)
