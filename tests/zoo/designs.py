"""Plain PyTorch designs for the zoo: the pathological ones whose verdict is known from their construction,
and the zero-initialized ones that are healthy once their chain of zeros is stepped through (issue 22)."""

import math

import torch
from torch import nn


class NamedStageVGG(nn.Module):
    """A plain VGG (15 convolutions, no BatchNorm) at PyTorch's default init, its stages named ``stage1`` …
    ``stage5`` as people write them. The default init (kaiming_uniform with a=√5) gives each conv a weight
    variance of 1/(3·fan_in): with ReLU the backward signal loses about half a decade per conv."""

    def __init__(self, widths=(16, 32, 64, 128, 128), depths=(2, 2, 3, 4, 4), classes=10):
        super().__init__()
        channels = 3
        for index, (width, depth) in enumerate(zip(widths, depths), start=1):
            layers = []
            for _ in range(depth):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2))
            self.add_module(f"stage{index}", nn.Sequential(*layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, classes)

    def stages(self):
        return [getattr(self, f"stage{index}") for index in range(1, 6)]

    def forward(self, x):
        for stage in self.stages():
            x = stage(x)
        return self.head(torch.flatten(self.pool(x), 1))


def deep_sigmoid_mlp(depth=20, width=64, classes=10):
    """The textbook vanishing case: sigmoid's derivative is at most 1/4 (Glorot and Bengio 2010)."""
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(width, classes))


def deep_relu_mlp_large_init(depth=20, width=64, std=0.3, classes=10):
    """Weights drawn N(0, 0.3²): each ReLU layer multiplies the backward signal by about
    std·√(width/2) ≈ 1.7, four and a half decades over 20 layers (He et al. 2015)."""
    layers = []
    for _ in range(depth):
        linear = nn.Linear(width, width)
        nn.init.normal_(linear.weight, std=std)
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, classes))


class StackedLSTMClassifier(nn.Module):
    """``nn.LSTM(num_layers=8)`` at default init, read at the last step: each layer passes about 0.14 of the
    gradient to the one below (shared/GRADIENTS.md, "Stacked recurrent layers hide depth"), so 8 layers lose
    several decades through depth while the per-step profile at the input stays flat."""

    def __init__(self, features=32, hidden=64, layers=8, classes=10):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class ReZeroBlock(nn.Module):
    """x + α·f(x) with α = 0 and no normalization (Bachlechner et al. 2020, ReZero)."""

    def __init__(self, width, heads):
        super().__init__()
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.ReLU(), nn.Linear(4 * width, width))
        self.alpha = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        x = x + self.alpha * self.attention(x, x, x, need_weights=False)[0]
        return x + self.alpha * self.mlp(x)


class ReZeroTransformer(nn.Module):
    def __init__(self, vocab=100, width=64, heads=4, depth=6, classes=10):
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(ReZeroBlock(width, heads) for _ in range(depth))
        self.head = nn.Linear(width, classes)

    def forward(self, tokens):
        x = self.embedding(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(1))


class FixupBlock(nn.Module):
    """Fixup's basic block (Zhang et al. 2019): scalar biases and a scale instead of BatchNorm, the first conv
    scaled by L^(-1/(2m-2)) = L^(-1/2) for m = 2 layers per branch, the last conv at zero."""

    def __init__(self, channels_in, channels, stride, blocks_total):
        super().__init__()
        self.bias1a, self.bias1b, self.bias2a, self.bias2b = (nn.Parameter(torch.zeros(1)) for _ in range(4))
        self.scale = nn.Parameter(torch.ones(1))
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        fan_in = self.conv1.weight[0].numel()
        nn.init.normal_(self.conv1.weight, std=math.sqrt(2 / fan_in) * blocks_total**-0.5)
        nn.init.zeros_(self.conv2.weight)
        self.shortcut = None
        if stride != 1 or channels_in != channels:
            self.shortcut = nn.Conv2d(channels_in, channels, 1, stride, bias=False)

    def forward(self, x):
        out = torch.relu(self.conv1(x + self.bias1a) + self.bias1b)
        out = self.conv2(out + self.bias2a) * self.scale + self.bias2b
        identity = x if self.shortcut is None else self.shortcut(x + self.bias1a)
        return torch.relu(out + identity)


class FixupResNet(nn.Module):
    """Fixup ResNet-20 for 32 px images: its classifier starts at zero too, so one step unlocks the head and the
    next the branches behind it (a chain of two)."""

    def __init__(self, widths=(16, 32, 64), blocks_per_stage=3, classes=10):
        super().__init__()
        total = len(widths) * blocks_per_stage
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        blocks, channels = [], widths[0]
        for stage, width in enumerate(widths):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(FixupBlock(channels, width, stride, total))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.bias = nn.Parameter(torch.zeros(1))
        self.head = nn.Linear(channels, classes)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        x = self.blocks(torch.relu(self.stem(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1) + self.bias)


class TokenTransformer(nn.Module):
    """A small post-norm ``nn.TransformerEncoder`` classifier, as PyTorch's own layers build it."""

    def __init__(self, vocab=100, width=64, heads=4, depth=6, classes=10):
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens):
        return self.head(self.encoder(self.embedding(tokens)).mean(1))
