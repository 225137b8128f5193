"""The Python API for tests and notebooks: check a model (or a target) in one call, or assert it healthy.

    from gradcheck_cli import assert_gradients_healthy
    assert_gradients_healthy(model, torch.randn(8, 128))

The same measurement and diagnosis as ``gradcheck scan``; inputs and loss follow the scan's rules
(``inputs`` plays the part of a model file's ``example_inputs()``, ``loss_fn`` of its ``loss_fn``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from torch import nn

from gradcheck_cli.common.choices import Amp, Device, FailOn, LossKind, Optimizer
from gradcheck_cli.examine.arguments import check_arguments, choice_argument, placement_argument
from gradcheck_cli.report.report import Report
from gradcheck_cli.scan.scan import scan_model, scan_target


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
    device: Device | str = Device.AUTO,
    amp: Amp | str | None = None,
    **thresholds: float,
) -> Report:
    """Measure and diagnose ``model`` (an ``nn.Module``, or a target as ``gradcheck scan`` takes it).

    ``inputs``: a tensor, a tuple of positional inputs, a dict of keyword inputs, or a function returning
    one of those (called once per pass); None infers them from the first layer. ``loss_fn(output, inputs)``
    overrides the loss chosen from the output. ``thresholds``: any field of ``Thresholds`` (``lr``,
    ``decades_warning``, ...). The model is left as found; a ``torch.compile``'d one is measured through
    its original module, eagerly.

    ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``) and ``amp`` (``"bf16"``, ``"fp16"``) are ``gradcheck scan``'s
    ``--device`` and ``--amp``. A target's model, which gradcheck loads, moves to ``device`` (``"auto"``: CUDA
    where torch can use it). An ``nn.Module`` you pass is never moved: it is measured where its parameters are
    (move it first, ``model.to("cuda")``), and ``device`` is only checked. ``amp`` applies to both: the passes
    run under ``torch.autocast`` in that dtype (fp16 with a loss scale, as GradScaler starts).

    The arguments are checked before anything runs. TypeError: ``model`` is neither an ``nn.Module``
    instance nor a path or target string (a class, None, a number); ``inputs`` is of another kind (a
    string); ``loss_fn`` is not callable; ``passes``, ``seed`` or ``steps`` is not an integer (``"3"``,
    ``2.5``); ``ignore`` is a string instead of a list of globs; ``verify`` is not a bool; a threshold is
    unknown or not a number. ValueError: a number out of its range (``passes`` 1 to 1000, ``seed`` 0 to
    2**63 - 1, ``steps`` 0 to 100000, ``lr`` above 0 and at most 1000, every threshold finite); ``loss``,
    ``optimizer``, ``device`` or ``amp`` not one of its choices; ``device="cuda"`` where torch sees no CUDA
    device, ``amp="bf16"`` on a GPU without bfloat16; an empty batch (a first dimension of 0); ``inputs`` or
    ``loss_fn`` given with a target, whose model file defines them.
    """
    options, limits = check_arguments(
        model, inputs, loss=loss, loss_fn=loss_fn, passes=passes, seed=seed, ignore=ignore, verify=verify,
        steps=steps, optimizer=optimizer, thresholds=thresholds,
    )  # fmt: skip
    placement = placement_argument(device, amp)
    if isinstance(model, (str, Path)):
        return scan_target(str(model), options, limits, placement=placement)
    namespace = {"loss_fn": loss_fn} if loss_fn is not None else {}
    # (scan_model describes it, "the Net given", once it has looked through a torch.compile wrapper)
    return scan_model(model, options, limits, namespace=namespace, inputs=inputs, placement=placement)


def assert_gradients_healthy(
    model: nn.Module | str | Path, inputs: Any = None, *, fail_on: FailOn | str = FailOn.ERROR, **kwargs: Any
) -> Report:
    """``check`` the model and raise ``AssertionError`` whose message is the condensed report when a
    finding is at or above ``fail_on`` (``"error"`` by default, ``"warning"`` to be strict). Returns
    the report otherwise. ``kwargs`` are ``check``'s (``passes``, ``device``, ``amp``, thresholds, ...), checked
    as it checks them; a ``fail_on`` that is not one of error, warning, never raises ValueError before anything
    runs."""
    fail_on = choice_argument(FailOn, fail_on, "fail_on")
    report = check(model, inputs, **kwargs)
    if report.fails(fail_on):
        raise AssertionError(condensed_text(report))
    return report


def condensed_text(report: Report, width: int = 100) -> str:
    """The whole text report without colour, as a test failure message: what `-v` shows on the command line,
    since a failing test has no `-v` to ask for the rest with."""
    from gradcheck_cli.render.interface import RenderOptions
    from gradcheck_cli.render.text import TextRenderer

    buffer = io.StringIO()
    TextRenderer().render(report, buffer, RenderOptions(width=width, color=False, verbose=True))
    return "gradients are not healthy:\n" + buffer.getvalue()
