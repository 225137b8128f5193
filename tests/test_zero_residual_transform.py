"""The zero_residual init on a copy (issue 22): the weight that ends each residual branch is found on the autograd
graph of one forward pass, whatever the module names, and zeroed; --verify applies it instead of calling it a
change of the forward code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.choices import FindingKind, FixId
from gradcheck_cli.judge.fixes import Fix
from gradcheck_cli.trials.transforms import FixNotApplicable, apply_fix_to_copy
from gradcheck_cli.trials.verify import trends, try_on_copy
from tests.test_transforms import assert_unchanged, snapshot

ZERO_RESIDUAL = {"scheme": "zero_residual"}


class BasicBlock(nn.Module):
    """torchvision's: the sum written in place, a projection shortcut (conv + norm) where the shape changes."""

    def __init__(self, inputs: int, outputs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.downsample = None
        if stride != 1 or inputs != outputs:
            self.downsample = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += identity
        return F.relu(out)


class Bottleneck(nn.Module):
    """Named so that no name says which norm is last (``gamma`` is), summed with torch.add."""

    def __init__(self, inputs: int, width: int, stride: int = 1) -> None:
        super().__init__()
        outputs = 4 * width
        self.reduce, self.gamma = nn.Conv2d(inputs, width, 1, bias=False), nn.BatchNorm2d(outputs)
        self.alpha, self.spatial = nn.BatchNorm2d(width), nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.beta, self.expand = nn.BatchNorm2d(width), nn.Conv2d(width, outputs, 1, bias=False)
        self.project = None
        if stride != 1 or inputs != outputs:
            self.project = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.alpha(self.reduce(x)))
        out = torch.relu(self.beta(self.spatial(out)))
        out = self.gamma(self.expand(out))
        return torch.relu(torch.add(out, x if self.project is None else self.project(x)))


class TinyResNet(nn.Module):
    def __init__(self, blocks: list[nn.Module], channels: int, stem_channels: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem_channels, 3, padding=1, bias=False), nn.BatchNorm2d(stem_channels))
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(torch.relu(self.stem(x))).mean(dim=(2, 3)))


def basic_resnet() -> TinyResNet:
    return TinyResNet([BasicBlock(8, 8), BasicBlock(8, 16, stride=2), BasicBlock(16, 16)], 16)


def bottleneck_resnet() -> TinyResNet:
    return TinyResNet([Bottleneck(8, 4), Bottleneck(16, 4), Bottleneck(16, 8, stride=2)], 32)


class PlainBlock(nn.Module):
    """A residual block without norms (Fixup's): its last conv ends the branch, behind dropout and a scale."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.5 * self.drop(self.conv2(torch.relu(self.conv1(x))))


class DenseNetLike(nn.Module):
    """Skips that concatenate only: torch.cat([x, f(x)])."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.grow = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(4 * 2**i), nn.Conv2d(4 * 2**i, 4 * 2**i, 3, padding=1)) for i in range(2)
        )
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.grow:
            x = torch.cat([x, torch.relu(layer(x))], dim=1)
        return self.head(x.mean(dim=(2, 3)))


class AffineFreeBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.BatchNorm2d(channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.conv(x))


IMAGES = torch.randn(4, 3, 8, 8)
LABELS = torch.randint(0, 10, (4,))


def forward_loss(model: nn.Module) -> torch.Tensor:
    return F.cross_entropy(model(IMAGES), LABELS)


def zeroed(model: nn.Module) -> set[str]:
    """The weights that are all zeros (biases start at zero)."""
    return {name for name, p in model.named_parameters() if name.endswith("weight") and not p.any()}


@pytest.mark.parametrize(
    ("build", "ends", "described"),
    [
        (basic_resnet, {"blocks.0.bn2.weight", "blocks.1.bn2.weight", "blocks.2.bn2.weight"}, "3 BatchNorm2d"),
        (
            bottleneck_resnet,
            {"blocks.0.gamma.weight", "blocks.1.gamma.weight", "blocks.2.gamma.weight"},
            "3 BatchNorm2d",
        ),
    ],
)
def test_the_last_norm_of_each_branch_is_zeroed_and_nothing_else(build, ends, described):
    torch.manual_seed(0)
    model = build()
    before = snapshot(model)
    fixed, description = apply_fix_to_copy(model, FixId.INIT, ZERO_RESIDUAL, forward_loss)
    assert zeroed(fixed) == ends
    assert zeroed(model) == set()
    assert_unchanged(model, before)
    # every other parameter and buffer (the norms' running statistics too) is the user's, and so are the modes
    for name, tensor in fixed.state_dict().items():
        if name not in ends:
            assert torch.equal(tensor, before[0][name]), name
    assert [m.training for m in fixed.modules()] == [m.training for m in model.modules()]
    assert description.startswith(f"zeroed the last norm of 3 residual branches ({described}: ")
    assert ", ".join(sorted(name.removesuffix(".weight") for name in ends)) in description


def test_eval_mode_copy_stays_in_eval_mode():
    model = basic_resnet().eval()
    fixed, _ = apply_fix_to_copy(model, "init", ZERO_RESIDUAL, forward_loss)
    assert not any(m.training for m in fixed.modules())
    assert len(zeroed(fixed)) == 3


def test_a_branch_without_norms_gets_its_last_conv_zeroed_through_dropout_and_a_scale():
    torch.manual_seed(0)
    model = TinyResNet([PlainBlock(8), PlainBlock(8)], 8)
    fixed, description = apply_fix_to_copy(model, "init", ZERO_RESIDUAL, forward_loss)
    assert zeroed(fixed) == {"blocks.0.conv2.weight", "blocks.1.conv2.weight"}
    assert description == "zeroed the last layer of 2 residual branches (2 Conv2d: blocks.0.conv2, blocks.1.conv2)"


def test_concatenation_skips_only_are_not_applicable():
    with pytest.raises(
        FixNotApplicable, match=r"^its skip connections concatenate .* this fix does not apply to it\.$"
    ):
        apply_fix_to_copy(DenseNetLike(), "init", ZERO_RESIDUAL, forward_loss)


def test_a_model_without_skips_is_not_applicable():
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.ReLU(), nn.Linear(32, 10))
    with pytest.raises(FixNotApplicable, match=r"^its autograd graph adds no x \+ f\(x\) .*does not apply to it\.$"):
        apply_fix_to_copy(model, "init", ZERO_RESIDUAL, forward_loss)


def test_a_branch_ending_in_a_norm_without_weight_is_not_applicable():
    model = TinyResNet([AffineFreeBlock(8), AffineFreeBlock(8)], 8)
    with pytest.raises(
        FixNotApplicable, match=r"^its residual branches end in a norm .* \(2 BatchNorm2d: affine=False.*as below\.$"
    ):
        apply_fix_to_copy(model, "init", ZERO_RESIDUAL, forward_loss)


def test_without_a_forward_pass_it_is_a_value_error():
    with pytest.raises(ValueError, match="forward_loss"):
        apply_fix_to_copy(basic_resnet(), "init", ZERO_RESIDUAL)


def test_verify_applies_it_to_a_copy_instead_of_asking_for_a_forward_change():
    torch.manual_seed(0)
    model = basic_resnet()
    before = snapshot(model)
    fix = Fix(FixId.INIT.value, "Zero-initialize the last norm of each residual branch", "", "", ZERO_RESIDUAL)
    trial = try_on_copy(
        model, lambda i: Batch((IMAGES,), target=LABELS), lambda out, batch: F.cross_entropy(out, batch.target), fix,
        passes=1, seed=0, thresholds=None, title="t",
    )  # fmt: skip
    assert_unchanged(model, before)
    assert trial.applied and trial.description.startswith("zeroed the last norm of 3 residual branches")
    # the zeroed norms block the gradient to their branches, which the zero-init check settles as by design; the
    # trial is judged on the depth trend of the copy it stepped, as the blocked branches have none at initialization
    diagnosis = trial.report.diagnosis
    (zero_init,) = [finding for finding in diagnosis.findings if finding.kind is FindingKind.ZERO_INIT]
    assert trends(diagnosis)[0] == zero_init.evidence["decades_after_step"] is not None


@pytest.mark.zoo
@pytest.mark.parametrize("architecture", ["resnet18", "resnet50"])
def test_the_same_norms_as_torchvisions_zero_init_residual(architecture):
    """torchvision zeroes each block's last norm by name (bn2, bn3); the graph finds the same ones without names."""
    from tests.zoo.torchvision_import import define_missing_operators

    define_missing_operators()
    models = pytest.importorskip("torchvision.models")
    build = getattr(models, architecture)
    torch.manual_seed(0)
    expected = zeroed(build(zero_init_residual=True))
    images = torch.randn(2, 3, 64, 64)
    fixed, _ = apply_fix_to_copy(build(), "init", ZERO_RESIDUAL, lambda model: model(images).sum())
    assert zeroed(fixed) == expected and len(expected) in (8, 16)
