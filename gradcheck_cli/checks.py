"""The Python API for tests and notebooks: check a model (or a target) in one call, or assert it healthy.

    from gradcheck_cli import assert_gradients_healthy
    assert_gradients_healthy(model, torch.randn(8, 128))

The same measurement and diagnosis as ``gradcheck scan``; inputs and loss follow the scan's rules
(``inputs`` plays the part of a model file's ``example_inputs()``, ``loss_fn`` of its ``loss_fn``).
"""

from __future__ import annotations

import io
from dataclasses import fields
from pathlib import Path
from typing import Any

from torch import nn

from gradcheck_cli.choices import FailOn, LossKind, Optimizer
from gradcheck_cli.diagnosis import Thresholds
from gradcheck_cli.options import ScanOptions
from gradcheck_cli.report import Report
from gradcheck_cli.scan import scan_model, scan_target

_THRESHOLD_NAMES = tuple(f.name for f in fields(Thresholds))


def check(
    model: nn.Module | str | Path,
    inputs: Any = None,
    *,
    loss: LossKind | str | None = None,
    loss_fn: Any = None,
    passes: int = 3,
    seed: int = 0,
    ignore: tuple[str, ...] | list[str] = (),
    verify: bool = False,
    steps: int = 0,
    optimizer: Optimizer | str = Optimizer.SGD,
    **thresholds: float,
) -> Report:
    """Measure and diagnose ``model`` (an ``nn.Module``, or a target as ``gradcheck scan`` takes it).

    ``inputs``: a tensor, a tuple of positional inputs, a dict of keyword inputs, or a function returning
    one of those (called once per pass); None infers them from the first layer. ``loss_fn(output, inputs)``
    overrides the loss chosen from the output. ``thresholds``: any field of ``Thresholds`` (``lr``,
    ``decades_warning``, ...). The model is left as found.
    """
    unknown = sorted(set(thresholds) - set(_THRESHOLD_NAMES))
    if unknown:
        raise TypeError(f"unknown threshold(s) {', '.join(unknown)}; the thresholds are {', '.join(_THRESHOLD_NAMES)}")
    options = ScanOptions(
        loss=LossKind(loss) if loss is not None else None, passes=passes, seed=seed, ignore=tuple(ignore),
        verify=verify, steps=steps, optimizer=Optimizer(optimizer),
    )  # fmt: skip
    limits = Thresholds(**thresholds)
    if isinstance(model, (str, Path)):
        return scan_target(str(model), options, limits)
    namespace = {"loss_fn": loss_fn} if loss_fn is not None else {}
    return scan_model(
        model, options, limits, namespace=namespace, description=f"the {type(model).__name__} given", inputs=inputs
    )


def assert_gradients_healthy(
    model: nn.Module | str | Path, inputs: Any = None, *, fail_on: FailOn | str = FailOn.ERROR, **kwargs: Any
) -> Report:
    """``check`` the model and raise ``AssertionError`` whose message is the condensed report when a
    finding is at or above ``fail_on`` (``"error"`` by default, ``"warning"`` to be strict). Returns
    the report otherwise."""
    report = check(model, inputs, **kwargs)
    if report.fails(FailOn(fail_on)):
        raise AssertionError(condensed_text(report))
    return report


def condensed_text(report: Report, width: int = 100) -> str:
    """The text report without colour, as a test failure message."""
    from gradcheck_cli.render.interface import RenderOptions
    from gradcheck_cli.render.text import TextRenderer

    buffer = io.StringIO()
    TextRenderer().render(report, buffer, RenderOptions(width=width, color=False))
    return "gradients are not healthy:\n" + buffer.getvalue()
