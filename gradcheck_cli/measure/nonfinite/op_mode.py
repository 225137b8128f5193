"""The TorchFunctionMode of the watched pass: every torch call the model's Python code (or the loss) makes, kept
on the module call it ran in when it made NaN/Inf from finite inputs or has an infinite slope at its input."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.overrides import TorchFunctionMode

from gradcheck_cli.measure.nonfinite.caller import calling_line
from gradcheck_cli.measure.nonfinite.op_domains import (
    OpName,
    SeenOp,
    domain_operands,
    leaves,
    made_nonfinite,
    plain,
    singular_op,
)
from gradcheck_cli.measure.nonfinite.tally import float_tensors, tally_of

if TYPE_CHECKING:  # the mode reads the watcher's state: its type for annotations only
    from gradcheck_cli.measure.nonfinite.watcher import Watcher

OPS_PER_CALL = 4  # ops kept per module call and kind: the first says it, a few more let a mask be told apart


class OpWatcher(TorchFunctionMode):
    """Sees every torch call made while it is entered (by the model's Python code or the loss), and keeps the
    few worth naming on the module call they ran in (``ModuleCall.ops``) or, outside the forward pass, on
    ``loss_ops``: calls that made NaN/Inf from finite inputs, and calls whose slope is infinite at a finite
    output (sqrt, a fractional power, acos or asin at the edge of their domain) on inputs that need a gradient.
    Nested calls (the ops inside ``F.softmax``) run with the mode off: the op named is the one the code called.
    An op it cannot inspect (a sparse or other unusual tensor) is left unnamed; the model's call is never changed.
    """

    def __init__(self, watcher: Watcher) -> None:
        super().__init__()
        self.watcher = watcher
        self.loss_ops: list[SeenOp] = []

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        watcher = self.watcher
        if watcher.busy:
            return func(*args, **kwargs)
        call = watcher.current
        seen = call.ops if call is not None else self.loss_ops
        if len(seen) >= 2 * OPS_PER_CALL:
            return func(*args, **kwargs)
        name = OpName.of(func)
        try:
            # An in-place op overwrites its input: what it took in is read before it runs.
            before = _inputs_finite(args, kwargs) if name.in_place else None
            operands = domain_operands(name, args, kwargs) if name.in_place else None
        except Exception:  # a diagnostic must not break the model's call: the op goes unnamed
            before, operands, name = None, None, None
        result = func(*args, **kwargs)
        if name is not None:
            try:
                found = _inspect(name, args, kwargs, result, before, operands)
            except Exception:  # as above
                found = None
            if found is not None:
                found.op.location, found.op.source = calling_line()
                seen.append(found)
        return result


def _inspect(
    name: OpName, args: tuple, kwargs: dict, result: Any, before: bool | None, operands: tuple | None
) -> SeenOp | None:
    outputs = list(float_tensors(result))
    if not outputs or not all(plain(output) for output in outputs):
        return None
    if all(bool(torch.isfinite(output.detach()).all()) for output in outputs):  # one host sync per output
        return singular_op(name, args, kwargs)
    tally = tally_of(outputs)
    inputs_finite = before if before is not None else _inputs_finite(args, kwargs)
    if not inputs_finite:
        return None
    operand, other = operands if operands is not None else domain_operands(name, args, kwargs)
    return SeenOp(made_nonfinite(name, operand, other, tally), tally.mask_like)


def _inputs_finite(args: tuple, kwargs: dict) -> bool:
    for value in leaves((args, kwargs)):
        if isinstance(value, torch.Tensor):
            if not plain(value):
                return False  # not read (see plain): the op is not named
            if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value.detach()).all()):
                return False
        elif isinstance(value, float) and not math.isfinite(value):
            return False  # masked_fill(mask, -inf), torch.full(..., nan): put there on purpose
    return True
