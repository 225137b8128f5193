"""Eight residual blocks x + fc2(relu(fc1(x))) whose last layer starts at zero (Fixup, SkipInit), then a
head: every fc1 gets exactly zero gradient at initialization, on purpose.

    gradcheck scan docs/examples/fixup_mlp.py

gradcheck sees the zero weights, trains a copy for one SGD step, finds the gradient flowing, and reports
one info finding, zero_init, instead of a vanishing gradient: the scan exits 0.
"""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, width), nn.Linear(width, width)
        nn.init.zeros_(self.fc2.weight)  # each branch starts at zero (Fixup, SkipInit)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


def build_model():
    return nn.Sequential(*[Block(64) for _ in range(8)], nn.Linear(64, 10))
