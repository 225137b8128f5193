"""A model with two inputs and two outputs, and its own loss.

    gradcheck scan docs/examples/two_inputs.py

forward(image, features) takes an image and a vector of tabular features and returns class logits and a
reconstruction of the features. example_inputs() returns a tuple, so every pass calls
model(image, features); loss_fn(output, inputs) gets the model's output whole and those inputs, and
returns one scalar, as in training.
"""

import torch
import torch.nn.functional as F
from torch import nn

BATCH, FEATURES, CLASSES = 16, 12, 4


class ImageAndFeatures(nn.Module):
    def __init__(self, width: int = 64):
        super().__init__()
        self.image = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.features = nn.Sequential(nn.Linear(FEATURES, width), nn.ReLU())
        self.trunk = nn.Sequential(nn.Linear(32 + width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.classify = nn.Linear(width, CLASSES)
        self.reconstruct = nn.Linear(width, FEATURES)

    def forward(self, image, features):
        joint = self.trunk(torch.cat([self.image(image), self.features(features)], dim=1))
        return self.classify(joint), self.reconstruct(joint)


def build_model():
    return ImageAndFeatures()


def example_inputs():
    return torch.randn(BATCH, 3, 32, 32), torch.randn(BATCH, FEATURES)


def loss_fn(output, inputs):
    logits, reconstruction = output
    _, features = inputs
    labels = torch.arange(BATCH) % CLASSES  # any fixed labels: the loss only has to be a training loss
    return F.cross_entropy(logits, labels) + F.mse_loss(reconstruction, features)
