"""Example inputs for a user's model: from the file, from options, or inferred from what the model describes
(its config, a stated input size) and from the first layer that consumes the input.

Every plan says where its inputs came from, so the report can tell the user what was assumed. This module
picks the source by precedence; given_inputs.py, config_inputs.py and first_layer.py make the plans.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.common.options import DTYPE_BYTES, InputOptions
from gradcheck_cli.load.config_inputs import from_config
from gradcheck_cli.load.first_layer import from_first_layer
from gradcheck_cli.load.given_inputs import from_function, from_shapes, like_saved
from gradcheck_cli.load.input_plan import InputPlan
from gradcheck_cli.load.input_specs import DEFAULT_BATCH_SIZE, DEFAULT_SEQ_LEN

EXAMPLE_INPUT_NAMES = ("example_inputs", "sample_input", "get_inputs")
# --input-dtype's names (their one home is common/options.py, which the CLI reads without torch) as torch dtypes.
DTYPES = {name: getattr(torch, name) for name in DTYPE_BYTES}


def plan_inputs(
    model: nn.Module,
    namespace: dict[str, Any],
    options: InputOptions,
    saved_inputs: tuple[tuple, dict] | None = None,
    given: Callable[[], Any] | None = None,
) -> InputPlan:
    """Inputs by precedence: inputs given to the Python API, the file's example_inputs(), then options,
    then the example inputs saved with a torch.export program, then inference (_infer)."""
    device, float_dtype = _device_and_dtype(model)
    if given is not None:
        return from_function("inputs", given, device, "the inputs given to check()")
    for name in EXAMPLE_INPUT_NAMES:
        if callable(namespace.get(name)):
            return from_function(name, namespace[name], device)
    if options.dtype is not None and options.dtype not in DTYPES:
        raise GradcheckError(f"--input-dtype {options.dtype!r} is not one of {', '.join(DTYPES)}.")
    if options.shapes:
        dtype = DTYPES[options.dtype] if options.dtype else float_dtype
        return from_shapes(options.shapes, dtype, options.vocab_size, device, "--input-shape")
    if options.vocab_size is not None:
        batch = options.batch_size or DEFAULT_BATCH_SIZE
        shape = (batch, options.seq_len or DEFAULT_SEQ_LEN)
        return from_shapes((shape,), torch.int64, options.vocab_size, device, "--vocab-size")
    if saved_inputs is not None:
        return like_saved(saved_inputs, device)
    return _infer(model, options, device, float_dtype)


def _device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    params = list(model.parameters())
    if not params:
        return torch.device("cpu"), torch.float32
    device = params[0].device
    if device.type == "meta":
        raise GradcheckError("the model's parameters are on the meta device and hold no data; build it on the CPU.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GradcheckError("the model is on a CUDA device, which this machine does not have; build it on the CPU.")
    floating = [p.dtype for p in params if p.is_floating_point()]
    return device, floating[0] if floating else torch.float32


def _infer(model: nn.Module, options: InputOptions, device: torch.device, float_dtype: torch.dtype) -> InputPlan:
    """Inputs the model describes (a transformers-style config), else read off the first layer that consumes
    them (definition order), sized as the model states where it does (timm's pretrained_cfg, an image_size
    attribute)."""
    return from_config(model, options, device, float_dtype) or from_first_layer(model, options, device, float_dtype)
