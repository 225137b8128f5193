"""A TorchScript deep linear stack whose weights are 1.5x too large. TorchScript modules take no hooks, so
gradcheck measures them by their parameter gradients, on every pass: with --passes 5 the total gradient
norm is measured five times, on five batches, and its spread is what the clipping fix is sized from.

    gradcheck scan docs/examples/scripted_deep_linear.py --passes 5
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
    return torch.jit.script(DeepLinear())
