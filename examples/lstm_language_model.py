"""A small LSTM language model with tied input/output embeddings: healthy at initialization.

    gradcheck scan examples/lstm_language_model.py

No example_inputs(): gradcheck sees the nn.Embedding first and feeds random token ids below its
num_embeddings; the (batch, tokens, vocabulary) output gets a per-token cross-entropy loss.
"""

from torch import nn


class LanguageModel(nn.Module):
    def __init__(self, vocab: int = 1000, width: int = 128, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.lstm = nn.LSTM(width, width, num_layers=layers, batch_first=True)
        self.decoder = nn.Linear(width, vocab)
        self.decoder.weight = self.embed.weight  # tied weights: one parameter, two modules

    def forward(self, tokens):
        hidden, _ = self.lstm(self.embed(tokens))
        return self.decoder(hidden)
