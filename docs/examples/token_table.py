"""A token model that looks its tokens up in a table it owns (an nn.Parameter, not an nn.Embedding), so
gradcheck cannot tell from its first layer that it takes token ids: --vocab-size says so.

    gradcheck scan docs/examples/token_table.py --vocab-size 5000 --seq-len 32

No example_inputs(): with --vocab-size and no --input-shape, gradcheck feeds one int64 input of token ids
below 5000, of shape (--batch-size, --seq-len). The output is (batch, classes): cross-entropy.
"""

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 5000


class TokenTable(nn.Module):
    def __init__(self, width: int = 64, classes: int = 4):
        super().__init__()
        self.table = nn.Parameter(torch.randn(VOCAB, width) * width**-0.5)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width), nn.GELU())
        self.head = nn.Linear(width, classes)

    def forward(self, tokens):
        return self.head(self.mlp(F.embedding(tokens, self.table)).mean(dim=1))


def build_model():
    return TokenTable()
