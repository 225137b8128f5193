"""A small transformer-style language model that shards itself with FSDP2 for a distributed scan
(docs/distributed.md). On one process shard_model() is not called:

    gradcheck scan docs/examples/sharded_model.py

Under torchrun every process calls shard_model(model, mesh) and scans its slice of the batch:

    torchrun --nproc-per-node 2 -m gradcheck_cli scan docs/examples/sharded_model.py --distributed
"""

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, WIDTH, DEPTH, SEQ_LEN, BATCH = 64, 32, 4, 12, 8


class Block(nn.Module):
    """Pre-LayerNorm residual MLP block: x + W2 gelu(W1 LN(x))."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.act = nn.GELU()
        self.down = nn.Linear(4 * width, width)

    def forward(self, x):
        return x + self.down(self.act(self.up(self.norm(x))))


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.blocks = nn.ModuleList(Block(WIDTH) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def build_model():
    return TinyLM()


def example_inputs():
    # the batch must split evenly over the processes: 8 samples run on 1, 2, 4 or 8 of them
    return torch.randint(0, VOCAB, (BATCH, SEQ_LEN))


def loss_fn(logits, tokens):
    """Next-token cross-entropy: a mean over the batch, as gradcheck's figures assume."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))


def shard_model(model, mesh):
    """Called by gradcheck on every process with a 1-D DeviceMesh over all of them: shard each block on
    its own (gathered only while it runs), then the rest with the root, as FSDP2 training does."""
    import warnings

    from torch.distributed.fsdp import fully_shard

    # The logits are a view of the head's output (a 3-D Linear), which FSDP2 warns about in case the caller
    # changes them in place; the loss here does not.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module")
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model
