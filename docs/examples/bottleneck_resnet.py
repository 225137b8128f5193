"""A ResNet-50-shaped network in plain PyTorch (bottleneck blocks 3-4-6-3, BatchNorm, He init), narrow and
at small images so it scans in seconds. Its gradient grows about x1.3 per block toward the input, as
torchvision's ResNet-50 does: BatchNorm at work, and the net trains from here (He et al. 2016).

    gradcheck scan docs/examples/bottleneck_resnet.py
"""

import torch
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inputs, width, stride=1):
        super().__init__()
        outputs = width * self.expansion
        self.conv1 = nn.Conv2d(inputs, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, outputs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outputs)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet50Shape(nn.Module):
    def __init__(self, base=8, classes=10, stages=(3, 4, 6, 3)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, base, 3, padding=1, bias=False), nn.BatchNorm2d(base), nn.ReLU(inplace=True)
        )
        blocks, inputs = [], base
        for index, count in enumerate(stages):
            width = base * 2**index
            for block in range(count):
                blocks.append(Bottleneck(inputs, width, stride=2 if block == 0 and index > 0 else 1))
                inputs = width * Bottleneck.expansion
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inputs, classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def build_model():
    return ResNet50Shape()


def example_inputs():
    return torch.randn(16, 3, 32, 32)
