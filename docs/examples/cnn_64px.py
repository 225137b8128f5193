"""A CNN for 64x64 images whose classifier expects that size: gradcheck's guess from the first
convolution (32x32 images) does not fit, so the input shape is given on the command line.

    gradcheck scan docs/examples/cnn_64px.py --input-shape 8,3,64,64

No example_inputs(): without --input-shape the forward pass fails in `classifier` with a shape error,
and gradcheck names the layer, the inputs it tried, and suggests --input-shape.
"""

from collections import OrderedDict

from torch import nn


def block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


def build_model():
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(block(3, 16), block(16, 32), block(32, 64)),
            flatten=nn.Flatten(),
            classifier=nn.Linear(64 * 8 * 8, 10),  # three 2x poolings turn 64x64 images into 8x8 maps
        )
    )
