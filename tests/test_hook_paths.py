"""The probe's two hook paths (torch_compat): the fast one, through torch's private hook dicts and instance
forwards, and the public one, through register_forward_hook and get_gradient_edge, give identical figures:
every field of every LayerStats and of the ProbeResult (its wall-clock ``seconds`` aside), bit for bit. The
hooks run in the same order and see the same tensors on both paths, so nothing may differ even in rounding."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch
from torch import nn

from gradcheck_cli.measure import torch_compat
from gradcheck_cli.measure.probe import probe_model
from tests import test_calibration as calibration


def comparable(value: Any) -> Any:
    """``value`` with every float as its exact hex (NaN equal to NaN) and dataclasses as dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, float):
        return "nan" if math.isnan(value) else value.hex()
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [comparable(item) for item in value]
    return value


def both_paths(model: nn.Module, make_batch, passes: int = calibration.PASSES) -> tuple[Any, Any]:
    """The probe's result on the fast path and on the public one, as calibration.check measures a model."""

    def probe():
        result = probe_model(model, make_batch, calibration.cross_entropy, passes=passes, seed=calibration.SEED)
        result.seconds = 0.0
        return comparable(result)

    assert torch_compat.fast_hooks(), "the fast path is not available on this torch: nothing to compare"
    fast = probe()
    with torch_compat.public_hooks():
        assert not torch_compat.fast_hooks()
        public = probe()
    return fast, public


def assert_identical(fast: Any, public: Any) -> None:
    assert [layer["name"] for layer in fast["layers"]] == [layer["name"] for layer in public["layers"]]
    for fast_layer, public_layer in zip(fast["layers"], public["layers"]):
        assert fast_layer == public_layer, fast_layer["name"]
    assert fast == public


class PReLUBlock(nn.Module):
    """A PReLU (a layer and an activation at once, differentiated again by autograd), a BatchNorm whose output
    an in-place ReLU overwrites, and a skip connection."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc, self.bn, self.relu, self.prelu = (
            nn.Linear(width, width),
            nn.BatchNorm1d(width),
            nn.ReLU(True),
            nn.PReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.prelu(self.relu(self.bn(self.fc(x))))


class StackedGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(calibration.INPUTS, 8, num_layers=2, batch_first=True)
        self.head = nn.Linear(8, calibration.CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def small_cases() -> dict[str, tuple[nn.Module, Any]]:
    torch.manual_seed(0)
    width = 16
    blocks = nn.Sequential(nn.Linear(width, width), PReLUBlock(width), PReLUBlock(width), nn.Linear(width, 10))
    return {
        "tanh-mlp": (calibration.mlp(nn.Tanh, depth=4, width=width), calibration.random_batches(8, width)),
        "prelu-batchnorm-skips": (blocks, calibration.random_batches(8, width)),
        "stacked-gru": (StackedGRU(), calibration.random_batches(4, 6, calibration.INPUTS)),
    }


@pytest.mark.parametrize("case", ["tanh-mlp", "prelu-batchnorm-skips", "stacked-gru"])
def test_both_hook_paths_give_identical_figures_on_small_models(case):
    model, make_batch = small_cases()[case]
    assert_identical(*both_paths(model, make_batch, passes=3))


def test_the_environment_variable_forces_the_public_path(monkeypatch):
    monkeypatch.setenv(torch_compat.PUBLIC_HOOKS_VARIABLE, "1")
    assert not torch_compat.fast_hooks()
    monkeypatch.setenv(torch_compat.PUBLIC_HOOKS_VARIABLE, "0")
    assert torch_compat.fast_hooks() == torch_compat.private_hooks_work()


@pytest.mark.slow
def test_both_hook_paths_give_identical_figures_on_every_calibration_model(monkeypatch):
    """Every calibration model (tests/snapshots/make.py's cases), measured as calibration.check measures it."""
    from tests.snapshots import make

    compared = []

    def check_both(model, make_batch):
        fast, public = both_paths(model, make_batch)
        compared.append((fast["model_name"], fast, public))

    monkeypatch.setattr(calibration, "check", check_both)
    cases = make.calibration_cases()
    for case in cases.values():
        case()
    assert len(compared) == len(cases)
    for _, fast, public in compared:
        assert_identical(fast, public)
