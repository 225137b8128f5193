"""The checks of the arguments the Python API takes (``check``, ``assert_gradients_healthy``, ``check_model``).

An argument that cannot work is refused at the call, naming the argument and what it takes: TypeError for
the wrong kind of value, ValueError for a value out of its range or not among the choices (issue 21). The
ranges are those of the command line and the config file (``gradcheck_cli.common.limits``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from gradcheck_cli.common.choices import Amp, Device, LossKind, Optimizer
from gradcheck_cli.common.errors import InvalidOptionError
from gradcheck_cli.common.limits import RANGES, check_range
from gradcheck_cli.common.options import ScanOptions
from gradcheck_cli.judge.diagnosis import Thresholds
from gradcheck_cli.measure.placement import Placement, api_spelling, resolve_placement

THRESHOLD_NAMES = tuple(f.name for f in fields(Thresholds))
_Choice = TypeVar("_Choice", bound=Enum)


def check_arguments(
    model: Any,
    inputs: Any = None,
    *,
    loss: Any = None,
    loss_fn: Any = None,
    passes: Any = 3,
    seed: Any = 0,
    ignore: Any = (),
    verify: Any = False,
    steps: Any = 0,
    optimizer: Any = Optimizer.SGD,
    thresholds: Mapping[str, Any] | None = None,
) -> tuple[ScanOptions, Thresholds]:
    """The arguments of ``check`` checked, as the scan's options and thresholds. Raises TypeError or
    ValueError naming the first argument that cannot work (see ``check``'s docstring)."""
    target = isinstance(model, (str, Path))
    if not target:
        module_argument(model)
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be a function loss_fn(output, inputs) -> loss, not {_kind(loss_fn)}")
    if target and (inputs is not None or loss_fn is not None):
        given = " and ".join(name for name, value in (("inputs", inputs), ("loss_fn", loss_fn)) if value is not None)
        raise ValueError(
            f"{given} apply to a model given as an nn.Module; for a target ({str(model)!r}) the model file defines "
            "example_inputs() and loss_fn"
        )
    inputs_argument(inputs)
    if callable(loss):
        raise TypeError(f"loss takes the name of a loss ({_listed(LossKind)}); pass a function as loss_fn=")
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be True or False, not {_kind(verify)}")
    options = ScanOptions(
        loss=None if loss is None else choice_argument(LossKind, loss, "loss"),
        passes=number_argument("passes", passes),
        seed=number_argument("seed", seed),
        ignore=patterns_argument(ignore),
        verify=verify,
        steps=number_argument("steps", steps),
        optimizer=choice_argument(Optimizer, optimizer, "optimizer"),
    )
    return options, thresholds_argument(thresholds or {})


def module_argument(model: Any) -> nn.Module:
    """``model`` if it is an ``nn.Module`` instance; TypeError otherwise (a class is the usual slip)."""
    if isinstance(model, nn.Module):
        return model
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise TypeError(
            f"model must be an nn.Module instance, not the class {model.__name__}; build it first, "
            f"e.g. check({model.__name__}(...))"
        )
    raise TypeError(
        "model must be an nn.Module, or a target as `gradcheck scan` takes it (a file path or "
        f"'package.module:factory'), not {_kind(model)}"
    )


def inputs_argument(inputs: Any) -> None:
    """``inputs``: None, a tensor, a tuple or list of positional inputs, a dict of keyword inputs, or a
    function returning one of those. Given directly, their batch (the first dimension of the first tensor
    with one) may not be empty: a pass over no samples measures no gradient at all."""
    if inputs is None or callable(inputs):
        return
    if isinstance(inputs, torch.Tensor):
        values: Iterable[Any] = (inputs,)
    elif isinstance(inputs, (tuple, list)):
        values = inputs
    elif isinstance(inputs, dict):
        values = inputs.values()
    else:
        raise TypeError(
            "inputs must be a tensor, a tuple of positional inputs, a dict of keyword inputs or a function "
            f"returning one of those, not {_kind(inputs)}"
        )
    first = next((value for value in values if isinstance(value, torch.Tensor) and value.dim() > 0), None)
    if first is not None and first.shape[0] == 0:
        raise ValueError(
            f"the batch is empty: inputs has a first dimension of 0 (shape {tuple(first.shape)}); give at least "
            "one sample"
        )


def number_argument(name: str, value: Any, argument: str | None = None) -> Any:
    """``value`` as an int (or float) in ``limits.RANGES[name]``: TypeError when it is not a number of that
    kind ("3", 2.5 for an integer, True), ValueError when it is out of the range."""
    argument = argument or name
    integer = RANGES[name].integer
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        wanted = "an integer" if integer else "a number"
        raise TypeError(f"{argument} must be {wanted}, not {_kind(value)}")
    value = int(value) if integer else float(value)
    try:
        return check_range(name, value, shown_as=argument)
    except InvalidOptionError as error:
        raise ValueError(str(error).rstrip(".")) from None


def patterns_argument(ignore: Any) -> tuple[str, ...]:
    """A list (or tuple, set) of glob patterns on layer names; one string is refused, since iterating it
    would ignore the layers matching each of its characters."""
    if isinstance(ignore, (str, bytes)) or not isinstance(ignore, Iterable):
        raise TypeError(f"ignore must be a list of glob patterns on layer names, e.g. ['head.*'], not {_kind(ignore)}")
    patterns = tuple(ignore)
    wrong = next((pattern for pattern in patterns if not isinstance(pattern, str)), None)
    if wrong is not None:
        raise TypeError(f"ignore must be a list of glob patterns (strings), but it holds {_kind(wrong)}")
    return patterns


def choice_argument(enum: type[_Choice], value: Any, argument: str) -> _Choice:
    """``value`` as a member of ``enum`` (the member or its value); ValueError listing the choices otherwise."""
    if isinstance(value, enum):
        return value
    if isinstance(value, str):
        try:
            return enum(value)
        except ValueError:
            pass
    raise ValueError(f"{argument} must be one of {_listed(enum)}, not {value!r}")


def placement_argument(device: Any, amp: Any) -> Placement:
    """``device`` and ``amp`` as the passes' placement: ValueError when either is not one of its choices or this
    machine cannot run it (``device='cuda'`` without CUDA, ``amp='bf16'`` on a GPU without bfloat16)."""
    chosen = choice_argument(Device, device, "device")
    dtype = None if amp is None else choice_argument(Amp, amp, "amp")
    try:
        return resolve_placement(chosen.value, dtype and dtype.value, api_spelling)
    except InvalidOptionError as error:
        raise ValueError(str(error).rstrip(".")) from None


def thresholds_argument(values: Mapping[str, Any]) -> Thresholds:
    """``Thresholds(**values)``, each a finite number (``lr`` in its range, ``min_trend_layers`` an
    integer); TypeError for an unknown name or a value that is not a number, ValueError otherwise."""
    unknown = sorted(set(values) - set(THRESHOLD_NAMES))
    if unknown:
        raise TypeError(f"unknown threshold(s) {', '.join(unknown)}; the thresholds are {', '.join(THRESHOLD_NAMES)}")
    checked: dict[str, Any] = {}
    for name, value in values.items():
        if name == "lr":
            checked[name] = number_argument("lr", value)
            continue
        integer = name == "min_trend_layers"
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
            raise TypeError(f"{name} must be {'an integer' if integer else 'a number'}, not {_kind(value)}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, not {value!r}")
        checked[name] = int(value) if integer else float(value)
    return Thresholds(**checked)  # raises ValueError for values that do not fit together


def _kind(value: Any) -> str:
    """A value as an error message shows it: its type, and the value itself when it is short."""
    if value is None:
        return "None"
    shown = repr(value)
    if isinstance(value, (str, bytes, numbers.Number)) and len(shown) <= 40:
        return f"{type(value).__name__} {shown}"
    return f"a {type(value).__name__}"


def _listed(enum: type[Enum]) -> str:
    return ", ".join(str(member.value) for member in enum)
