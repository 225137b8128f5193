"""The tensors inside a batch or a module's inputs and outputs (nested tuples, lists and dicts): finding them,
moving a batch to the model's device, and what they say about the call (its batch size, whether it carries a
gradient)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from gradcheck_cli.common.batches import Batch


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside nested tuples, lists and dicts (module outputs are often tuples)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)


def batch_on_device(batch: Batch, params: list[nn.Parameter]) -> Batch:
    """The batch on the model's device: presets and inferred inputs are drawn on the CPU."""
    device = params[0].device if params else None
    if device is None or not _any_tensor(batch, lambda t: t.device != device):
        return batch
    return Batch(_moved(batch.args, device), _moved(batch.kwargs, device), _moved(batch.target, device), batch.size)


def _any_tensor(batch: Batch, test: Callable[[torch.Tensor], bool]) -> bool:
    return any(test(t) for t in tensors_in((batch.args, batch.kwargs, batch.target)))


def _moved(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        moved = [_moved(v, device) for v in value]
        return tuple(moved) if isinstance(value, tuple) else moved
    if isinstance(value, dict):
        return {k: _moved(v, device) for k, v in value.items()}
    return value


def input_kinds(batch: Batch) -> list[tuple[torch.Size, torch.dtype]]:
    return [(t.shape, t.dtype) for t in tensors_in((batch.args, batch.kwargs))]


def carries_grad(args: tuple) -> bool:
    """Whether a module's inputs carry a gradient (a tensor that requires grad)."""
    if len(args) == 1 and type(args[0]) is torch.Tensor:
        return args[0].requires_grad
    return any(t.requires_grad for t in tensors_in(args))


def starts_path(args: tuple) -> bool:
    """Whether a layer's positional inputs are tensors none of which carries a gradient history: it reads the
    model's inputs (or something computed from them without parameters). No tensor given: unknown, False."""
    tensors = list(tensors_in(args))
    return bool(tensors) and not any(t.requires_grad for t in tensors)


def batch_size(batch: Batch) -> int:
    if batch.size is not None:
        return batch.size
    for value in tensors_in((batch.args, batch.kwargs)):
        if value.dim() > 0:
            return int(value.shape[0])
    return 1
