"""A Transformer encoder classifier that takes token ids and a padding mask as keyword arguments.

    gradcheck scan docs/examples/padded_transformer.py

example_inputs() returns a dict, so every pass calls model(tokens=..., padding_mask=...). The mask
marks the padding at the end of the shorter sequences, which attention must not read.
"""

import torch
from torch import nn

BATCH, TOKENS, VOCAB = 8, 24, 500


class PaddedEncoder(nn.Module):
    def __init__(self, width: int = 64, layers: int = 4, classes: int = 3):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.position = nn.Parameter(torch.randn(TOKENS, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=128, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens, padding_mask):
        hidden = self.encoder(self.embed(tokens) + self.position, src_key_padding_mask=padding_mask)
        keep = (~padding_mask).unsqueeze(-1).float()
        pooled = (hidden * keep).sum(dim=1) / keep.sum(dim=1)  # mean over the real tokens only
        return self.head(pooled)


def build_model():
    return PaddedEncoder()


def example_inputs():
    lengths = torch.randint(TOKENS // 2, TOKENS + 1, (BATCH,))
    padding_mask = torch.arange(TOKENS) >= lengths.unsqueeze(1)  # True where a sequence is padded
    return {"tokens": torch.randint(0, VOCAB, (BATCH, TOKENS)), "padding_mask": padding_mask}
