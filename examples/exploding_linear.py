"""A deep linear stack whose weights are 1.5x too large: the backward signal grows 1.5x per layer while
the weight-gradient norms stay nearly equal in every layer (Glorot & Bengio 2010).

    gradcheck scan examples/exploding_linear.py
"""

import math

import torch
from torch import nn


class DeepLinear(nn.Module):
    def __init__(self, depth: int = 40, width: int = 128, gain: float = 1.5):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        for layer in self.layers:
            nn.init.normal_(layer.weight, std=gain / math.sqrt(width))
            nn.init.zeros_(layer.bias)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def build_model():
    return DeepLinear()


def loss_fn(output, inputs):
    # Any loss works; this one says so explicitly instead of relying on the default.
    labels = torch.randint(0, output.shape[-1], (output.shape[0],))
    return nn.functional.cross_entropy(output, labels)
