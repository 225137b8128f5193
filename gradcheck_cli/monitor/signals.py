"""The module hooks of one sampled step: each layer's output norm and the norm of the gradient arriving at that
output (the backward signal), and the batch size. Registered after the step before a sampled one and removed
when it is read, so the other steps run no hook at all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradcheck_cli.measure.layer_figures import SIGNAL_BACKWARD, SIGNAL_FORWARD
from gradcheck_cli.measure.tensors import tensors_in


class SignalHooks:
    """Module hooks for one sampled step: each layer's output norm, and through a tensor hook on that output,
    the norm of the gradient arriving at it (the backward signal). Kept as 0-d tensors on the device until
    the read-out; the root's input gives the batch size."""

    def __init__(self, layers: list[tuple[str, nn.Module]], root: nn.Module):
        self.layers = layers
        self.values: list[tuple[int, int, torch.Tensor]] = []  # (SIGNAL_FORWARD or SIGNAL_BACKWARD, layer, norm)
        self.numel = [0] * len(layers)
        self.calls = [0] * len(layers)
        self.order: list[int] = []  # the layers in the order they first ran
        self.batch = 0  # samples seen by the root's forward
        self.first_layer_batch = 0  # samples seen by the first layer to run, where the root is not called
        self.active = True
        self._nodes: list[Any] = []  # the graph nodes of the hooked outputs: see Monitor._hand_over_nodes
        self._handles = [root.register_forward_pre_hook(self._count_batch, with_kwargs=True)]
        for index, (_, module) in enumerate(layers):
            self._handles.append(module.register_forward_hook(self._forward(index, module)))

    def remove(self) -> None:
        self.active = False
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def take_nodes(self) -> list[Any]:
        """The nodes read so far, no longer held here: the tensor hooks keep this object, and the nodes keep them."""
        nodes, self._nodes = self._nodes, []
        return nodes

    def batch_size(self) -> int | None:
        """Samples in the step's forward passes (a trainer may call a submodule rather than the model itself:
        then the first layer's input tells); None where neither saw a batch."""
        return self.batch or self.first_layer_batch or None

    def _count_batch(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.active and torch.is_grad_enabled():
            first = next((t for t in tensors_in((args, kwargs)) if t.dim() > 0), None)
            if first is not None:
                self.batch += int(first.shape[0])

    def _forward(self, index: int, expected: nn.Module) -> Callable:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            # (a deep copy of the model, an EMA copy say, carries this hook too: only the watched module counts)
            if not self.active or module is not expected or not torch.is_grad_enabled():
                return
            self.calls[index] += 1
            if self.calls[index] == 1:
                self.order.append(index)
            if index == self.order[0]:
                first = next((t for t in tensors_in(args) if t.dim() > 0), None)
                self.first_layer_batch += int(first.shape[0]) if first is not None else 0
            for tensor in tensors_in(output):
                if not tensor.is_floating_point():
                    continue
                self.values.append(
                    (SIGNAL_FORWARD, index, torch.linalg.vector_norm(tensor.detach(), dtype=torch.float64))
                )
                self.numel[index] += tensor.numel()
                if tensor.requires_grad:
                    tensor.register_hook(self._backward(index))
                    if tensor.grad_fn is not None:
                        self._nodes.append(tensor.grad_fn)

        return hook

    def _backward(self, index: int) -> Callable:
        def hook(grad: torch.Tensor) -> None:
            if self.active:
                self.values.append((SIGNAL_BACKWARD, index, torch.linalg.vector_norm(grad, dtype=torch.float64)))

        return hook
