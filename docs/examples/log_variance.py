"""A regression head that predicts a log-variance by taking the log of a plain Linear's output: the Linear
gives negative values for part of the batch, and torch.log makes NaN of them in the forward pass.

    gradcheck scan docs/examples/log_variance.py

gradcheck names the op (torch.log), the line that called it and how far below 0 its input went, gives the
cause domain_error, and suggests the safe_op fix: the same call with its input clamped at eps (or made
positive by construction with softplus). No clipping is offered: clipping bounds the gradient, not a log of
negatives.
"""

import torch
from torch import nn


class VarianceHead(nn.Module):
    def __init__(self, features=8, width=32):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.variance = nn.Linear(width, 1)

    def forward(self, x):
        variance = self.variance(self.body(x))
        return torch.log(variance)


def build_model():
    return VarianceHead()
