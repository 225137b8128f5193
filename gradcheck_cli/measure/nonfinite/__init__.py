"""Find where the first NaN/Inf of a pass came from.

The probe only knows *that* a pass went non-finite: its hooks keep 0-d norms, and a NaN anywhere makes
every norm after it NaN. This package says *where*: it re-runs one pass with every module watched
(``watcher``) and names the module that turned finite values into non-finite ones (its output in the forward
pass, or the gradient it sends back in the backward pass), and the modules that merely passed the NaN on
(``origin``). Inside the module it names, a TorchFunctionMode (``torch.overrides``, public API) active during
the watched forward pass and loss names the op (``op_mode``): the first torch call that turned finite inputs
into NaN/Inf (a log of negatives, a division by 0), or, for a NaN made in the backward pass, one whose slope is
infinite at its inputs (sqrt at 0), with the range of the operand out of its domain (``op_domains``) and the
line of code that called it (``caller``).
It is diagnostic-only, run after a NaN was seen, so it counts values on the host freely.
"""

from __future__ import annotations

from contextlib import ExitStack
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from gradcheck_cli.common.stats import NonfiniteOrigin
from gradcheck_cli.measure.nonfinite.op_mode import OpWatcher
from gradcheck_cli.measure.nonfinite.origin import backward_origin, forward_origin, made_op
from gradcheck_cli.measure.nonfinite.tally import finite_ranges, float_tensors, loss_value, tally_of
from gradcheck_cli.measure.nonfinite.watcher import Watcher
from gradcheck_cli.measure.torch_compat import clear_frames, release_nodes

if TYPE_CHECKING:  # the probe calls this package: import its types for annotations only
    from gradcheck_cli.common.batches import Batch, LossFn


def trace_nonfinite(model: nn.Module, batch: Batch, loss_fn: LossFn) -> NonfiniteOrigin | None:
    """Run one forward, loss and backward pass with every module watched; None when all stayed finite.

    The caller keeps the model as found (``.grad``, train/eval mode, buffers); this only resets
    ``.grad`` before its backward pass and removes every hook it added, also when the model raises.
    TorchScript modules take no hooks: a NaN made inside one is put on the watched module that called it.
    """
    nodes: list[Any] = []  # the autograd nodes the tensor hooks read, held until the pass's graph is gone
    try:
        return _watched_pass(model, batch, loss_fn, nodes)
    except BaseException as error:
        clear_frames(error)  # they hold the graph, which must go first
        raise
    finally:
        release_nodes(nodes)


def _watched_pass(model: nn.Module, batch: Batch, loss_fn: LossFn, nodes: list[Any]) -> NonfiniteOrigin | None:
    names = {id(module): name or "(model)" for name, module in model.named_modules()}
    with ExitStack() as hooks:
        watcher = Watcher(names, hooks, nodes)
        ops = OpWatcher(watcher)
        for module in model.modules():
            if isinstance(module, torch.jit.ScriptModule):
                continue
            hooks.callback(module.register_forward_pre_hook(watcher.before, with_kwargs=True).remove)
            hooks.callback(module.register_forward_hook(watcher.after, with_kwargs=True).remove)
            for param_name, param in module.named_parameters(recurse=False):
                if param.requires_grad:
                    hooks.callback(param.register_hook(partial(watcher.parameter_grad, module, param_name)).remove)
        with ops:
            output = model(*batch.args, **batch.kwargs)
        # Checkpointed modules re-run their forward during backward: those calls are not new evidence.
        watcher.watching = False
        origin = forward_origin(watcher.calls)
        if origin is not None:
            return origin
        with ops:
            loss = loss_fn(output, batch)
        output_ranges = finite_ranges(float_tensors(output))
        if not tally_of([loss]).finite:
            detail = f"loss: {loss_value(loss)} from finite model outputs"
            return NonfiniteOrigin("loss", None, None, detail, output_ranges, op=made_op(ops.loss_ops))
        if not loss.requires_grad:
            return None
        for param in model.parameters():
            param.grad = None  # gradients left from earlier passes would read as this pass's
        loss.backward()
        return backward_origin(watcher.events, loss, output_ranges, ops.loss_ops)
