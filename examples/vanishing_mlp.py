"""A deep sigmoid MLP with PyTorch's default init: the gradient vanishes long before the first layer.

    gradcheck scan examples/vanishing_mlp.py

No example_inputs(): gradcheck infers a (8, 128) input from the first nn.Linear.
"""

from torch import nn

layers = []
for _ in range(30):
    layers += [nn.Linear(128, 128), nn.Sigmoid()]
model = nn.Sequential(*layers, nn.Linear(128, 10))
