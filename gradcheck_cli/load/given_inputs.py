"""Inputs the user gives: the model file's ``example_inputs()`` (or those given to ``check()``), the shapes
of ``--input-shape`` and ``--vocab-size``, and the example inputs saved with a torch.export program."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from gradcheck_cli.common import stages
from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.errors import GradcheckError, describe_exception
from gradcheck_cli.load.input_plan import EXAMPLE_INPUTS_HINT, InputPlan, describe_shapes, leading_size, to_device
from gradcheck_cli.load.input_specs import InputSpec, from_specs


def from_function(name: str, function: Callable, device: torch.device, label: str | None = None) -> InputPlan:
    def call() -> Any:
        with stages.user_code(stages.INPUTS):
            try:
                return function()
            except Exception as error:
                raise GradcheckError(f"{name}() raised {describe_exception(error)}") from error

    with torch.random.fork_rng(devices=[]):
        sample = call()
    args, kwargs = _split_inputs(sample, name)
    shapes = describe_shapes(args, kwargs)

    def make_batch(index: int) -> Batch:
        raw = call()
        args, kwargs = _split_inputs(raw, name)
        return Batch(
            args=to_device(args, device), kwargs=to_device(kwargs, device), target=raw, size=leading_size(args, kwargs)
        )

    return InputPlan(f"{label or f'{name}() in the model file'}: {shapes}", shapes, make_batch)


def _split_inputs(value: Any, name: str) -> tuple[tuple, dict]:
    if isinstance(value, torch.Tensor):
        return (value,), {}
    if isinstance(value, (tuple, list)):
        return tuple(value), {}
    if isinstance(value, dict):
        return (), dict(value)
    raise GradcheckError(
        f"{name}() returned {type(value).__name__!r}; return a tensor, a tuple of inputs or a dict of keyword arguments."
    )


def from_shapes(
    shapes: tuple[tuple[int, ...], ...], dtype: torch.dtype, vocab_size: int | None, device: torch.device, source: str
) -> InputPlan:
    """Random inputs of the shapes an option gives, batch size first."""
    integer = not dtype.is_floating_point
    if integer and dtype is not torch.bool and vocab_size is None:
        raise GradcheckError("integer inputs need a range: pass --vocab-size N (tokens are drawn from 0 to N-1).")
    if integer and vocab_size is not None and vocab_size < 1:
        raise GradcheckError("--vocab-size must be a positive integer.")
    below = vocab_size if integer and dtype is not torch.bool else None
    specs = [InputSpec(shape[1:], dtype, "", below=below) for shape in shapes]
    text = ", ".join(f"{shape} {str(dtype).replace('torch.', '')}" for shape in shapes)
    range_note = f" (tokens below {vocab_size})" if below else ""
    return from_specs(specs, shapes[0][0], device, f"{source}: {text}{range_note}", assumed=False)


def like_saved(
    saved: tuple[tuple, dict],
    device: torch.device,
    label: str = "shaped like the example inputs saved with the program",
    assumed: bool = False,
) -> InputPlan:
    """Fresh random draws shaped like saved example inputs (a torch.export program's, a model's
    dummy_inputs); integer inputs (token ids, indices) are reused as saved, since their valid range is not
    recorded."""
    args, kwargs = saved
    shapes = describe_shapes(tuple(args), dict(kwargs))

    def fresh(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return torch.randn(value.shape, dtype=value.dtype, device=device)
        return to_device(value, device)

    def make_batch(index: int) -> Batch:
        batch_args = tuple(fresh(v) for v in args)
        batch_kwargs = {k: fresh(v) for k, v in kwargs.items()}
        return Batch(args=batch_args, kwargs=batch_kwargs, size=leading_size(batch_args, batch_kwargs))

    hint = f"pass --input-shape, or {EXAMPLE_INPUTS_HINT}" if assumed else InputPlan.hint
    return InputPlan(f"{label}: {shapes}", shapes, make_batch, assumed=assumed, hint=hint)
