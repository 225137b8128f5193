"""A verdict belongs to the network, not to its module names (issue 22): the same modules, renamed, regrouped
into named stages or flattened into one ``nn.Sequential``, give the same verdict and the same decades.

The variants share their modules (and so their weights) and compute the same function; only the names and the
nesting differ. The zoo (tests/test_zoo.py, ``make test-zoo``) checks the same on torchvision and timm models.
"""

from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.choices import Verdict
from gradcheck_cli.examine.check_model import check_model

CLASSES = 10


class Residual(nn.Module):
    """x + f(x): conv, BatchNorm, ReLU, conv, BatchNorm."""

    def __init__(self, width):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


def resnet_parts(blocks=8, width=8):
    stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, CLASSES))
    return stem, [Residual(width) for _ in range(blocks)], head


def vgg_parts(widths=(8, 8, 16, 16, 16, 32, 32, 32, 32)):
    """A plain VGG at PyTorch's default init: it vanishes (tests/zoo/designs.py has the full-size one)."""
    layers, previous = [], 3
    for width in widths:
        layers.append(nn.Sequential(nn.Conv2d(previous, width, 3, padding=1), nn.ReLU()))
        previous = width
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(previous, CLASSES))
    return None, layers, head


def transformer_parts(layers=4, width=32):
    embed = nn.Linear(16, width)
    blocks = [nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True) for _ in range(layers)]
    head = nn.Sequential(nn.Flatten(), nn.Linear(8 * width, CLASSES))
    return embed, blocks, head


def as_built(stem, blocks, head):
    """The blocks in one `blocks` list, as most code names them."""
    model = nn.Module()
    model.stem, model.blocks, model.head = stem, nn.ModuleList(blocks), head

    def forward(x):
        x = model.stem(x) if model.stem is not None else x
        for block in model.blocks:
            x = block(x)
        return model.head(x)

    model.forward = forward
    return model


def flat_sequential(stem, blocks, head):
    """Everything in one nn.Sequential: the names become 0, 1, 2, ..."""
    return nn.Sequential(*([stem] if stem is not None else []), *blocks, head)


def named_stages(stem, blocks, head):
    """Blocks grouped into stages with their own names (layer1.., stage1.., inception4a), one level deeper."""
    half = len(blocks) // 2
    stages = OrderedDict(
        [("stage_one", nn.Sequential(*blocks[:half])), ("second_stage", nn.Sequential(*blocks[half:]))]
    )
    parts = ([("stem_part", stem)] if stem is not None else []) + list(stages.items()) + [("classifier", head)]
    return nn.Sequential(OrderedDict(parts))


def each_block_named(stem, blocks, head):
    """Every block under a name of its own, no number in it: encoder_layer_a, encoder_layer_b, ..."""
    parts = [(f"encoder_layer_{chr(ord('a') + i)}", block) for i, block in enumerate(blocks)]
    parts = ([("patchify", stem)] if stem is not None else []) + parts + [("out", head)]
    return nn.Sequential(OrderedDict(parts))


VARIANTS = [flat_sequential, named_stages, each_block_named]
ARCHITECTURES = {
    "resnet": (resnet_parts, (3, 16, 16), Verdict.HEALTHY),
    "vgg_default_init": (vgg_parts, (3, 16, 16), Verdict.VANISHING),
    "transformer": (transformer_parts, (8, 16), Verdict.HEALTHY),
}


def check(model, shape):
    def make_batch(index):
        return Batch(args=(torch.randn(8, *shape),), target=torch.randint(0, CLASSES, (8,)))

    return check_model(model, make_batch, lambda out, batch: F.cross_entropy(out, batch.target), passes=2, seed=0)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.__name__)
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_same_modules_under_other_names_and_nesting_give_the_same_verdict_and_decades(name, variant):
    parts, shape, expected = ARCHITECTURES[name]
    torch.manual_seed(0)
    stem, blocks, head = parts()
    built = check(as_built(stem, blocks, head), shape)
    varied = check(variant(stem, blocks, head), shape)
    assert built.verdict is expected
    assert varied.verdict is built.verdict
    before, after = built.diagnosis.profile, varied.diagnosis.profile
    assert before.decades is not None and after.decades == pytest.approx(before.decades, abs=1e-9)
    assert after.gain_per_layer == pytest.approx(before.gain_per_layer, abs=1e-9)
    assert [f.kind for f in varied.diagnosis.findings] == [f.kind for f in built.diagnosis.findings]
    assert sorted(varied.diagnosis.statuses.values()) == sorted(built.diagnosis.statuses.values())


def test_the_variants_compute_the_same_function():
    """The premise: only names and nesting differ, so any difference in the verdict comes from names."""
    for name, (parts, shape, _) in ARCHITECTURES.items():
        torch.manual_seed(0)
        stem, blocks, head = parts()
        x = torch.randn(4, *shape)
        with torch.no_grad():
            expected = as_built(stem, blocks, head).eval()(x)
            for variant in VARIANTS:
                torch.testing.assert_close(variant(stem, blocks, head).eval()(x), expected, msg=name)
