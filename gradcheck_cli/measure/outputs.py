"""Watching the layers' outputs: a forward hook per layer keeps each output's norm and the gradient edge its
output gradient is taken at (or a hook on the tensor, for a large one), and the norms of small outputs and
output gradients are deferred and taken together, with a check that no kept tensor changed before its norm."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gradcheck_cli.measure.fp16_range import Fp16Ranges
from gradcheck_cli.measure.layer_figures import (
    EXACT_FLOAT32_NORM,
    SIGNAL_BACKWARD,
    SIGNAL_FORWARD,
    fused_norms,
    narrow_dtype,
    ranked,
    signal_squares,
)
from gradcheck_cli.measure.layer_types import SCALE_INVARIANT_NORMS
from gradcheck_cli.measure.tensors import carries_grad, starts_path, tensors_in
from gradcheck_cli.measure.torch_compat import gradient_edge_function, release_nodes, tensor_version

# Kept tensors are reduced together once they hold this much: small enough that they are still in cache (at
# 8 MiB, a 200-layer narrow MLP's norms read them back from memory: 3.6 ms a probe against 2.8), and a bound
# on the memory batching may add.
DEFER_BYTES = 2**18
# A tensor of this many elements (256 KiB in float32) or more is reduced at once, while it is in cache, and
# its output's gradient measured in a hook; smaller ones are batched (see OutputNorms).
LARGE_NUMEL = 2**16


class OutputNorms:
    """One pass's norms of outputs and output gradients, per slot, in float32 where that is exact and in float64
    (``wide_keys``, chosen by precision.float64_slots) where it would not be.

    Float32 norms of small tensors are batched: ``keep`` only keeps the tensor, and one fused ``_foreach_norm``
    reduces those kept each time they reach DEFER_BYTES and when the pass ends, so a deep narrow net pays one
    call per few dozen layers, not one per layer. A tensor of LARGE_NUMEL elements or more is reduced at once,
    while it is in cache. A kept tensor must not change before it is reduced: the first pass takes its outputs'
    norms at once and notes the outputs an in-place op overwrites (BatchNorm then ReLU(inplace=True)), which are
    reduced at once from then on, and every kept tensor's version counter is checked when it is reduced; a pass
    where one changed is not exact (it is measured again).
    """

    def __init__(self) -> None:
        self.first = True
        self.narrow: list[torch.Tensor] = []  # float32 norms, and the slot each belongs to
        self.narrow_slots: list[tuple[int, int]] = []
        self.wide: list[torch.Tensor] = []  # float64 norms
        self.wide_slots: list[tuple[int, int]] = []
        self.wide_keys: set[tuple[int, int]] = set()  # slots whose last value was too small or large for float32
        self.immediate_keys: set[tuple[int, int]] = set()  # outputs an in-place op overwrites: reduced at once
        self._kept: list[tuple[tuple[int, int], torch.Tensor, int]] = []  # (slot, tensor, its version) to reduce
        self._kept_bytes = 0
        self.overwritten = False  # a kept tensor changed before it was reduced: the pass is measured again
        self.last_output: tuple[tuple[int, int], torch.Tensor, int] | None = None

    def start_pass(self, first: bool) -> None:
        self.narrow, self.narrow_slots, self.wide, self.wide_slots = [], [], [], []
        self.first = first
        self._kept, self._kept_bytes, self.overwritten, self.last_output = [], 0, False, None

    def record(self, key: tuple[int, int], tensor: torch.Tensor) -> None:
        """The norm of ``tensor`` in slot ``key``: in float64, at once in float32, or kept for a batched one."""
        if key in self.wide_keys:
            self.wide.append(torch.linalg.vector_norm(tensor, dtype=torch.float64))
            self.wide_slots.append(key)
        elif (self.first and key[0] == SIGNAL_FORWARD) or key in self.immediate_keys or tensor.numel() >= LARGE_NUMEL:
            self.narrow.append(torch.linalg.vector_norm(tensor, dtype=narrow_dtype(tensor)))
            self.narrow_slots.append(key)
        else:
            self.keep(key, tensor)
        if self.first and key[0] == SIGNAL_FORWARD:
            self.last_output = (key, tensor, tensor_version(tensor))

    def keep(self, key: tuple[int, int], tensor: torch.Tensor) -> None:
        """Keep a small tensor for a batched float32 norm, reduced with others every DEFER_BYTES."""
        self._kept.append((key, tensor, tensor_version(tensor)))
        self._kept_bytes += tensor.numel() * tensor.element_size()
        if self._kept_bytes > DEFER_BYTES:
            self.reduce_kept()

    def reduce_kept(self) -> None:
        """The kept tensors' float32 norms, in one fused call per dtype."""
        if not self._kept:
            return
        for key, tensor, version in self._kept:
            if tensor_version(tensor) != version:
                self.overwritten = True
                self.immediate_keys.add(key)
        self.narrow.extend(fused_norms([tensor for _, tensor, _ in self._kept]))
        self.narrow_slots.extend(key for key, _, _ in self._kept)
        self._kept, self._kept_bytes = [], 0

    def note_overwrite(self) -> None:
        """First pass: whether an in-place op overwrote the last output seen since its hook (the next hook
        to run is the first chance to tell); such outputs are reduced in their hook from then on."""
        if self.last_output is not None:
            key, tensor, version = self.last_output
            if tensor_version(tensor) != version:
                self.immediate_keys.add(key)
            self.last_output = None

    def unpack(
        self, host: list[float], n_grads: int, n_layers: int
    ) -> tuple[list[float], list[float], list[bool], bool]:
        """(forward and backward sums of squares per layer, whether each layer's backward was seen, whether every
        float32 sum lay in its exact range), read off ``host``: the narrow norms, ``n_grads`` parameter-gradient
        norms, then the wide norms."""
        n_narrow = len(self.narrow_slots)
        wide_values = host[n_narrow + n_grads :]
        forward_sq, backward_sq, backward_seen = signal_squares(
            [*self.narrow_slots, *self.wide_slots], [*host[:n_narrow], *wide_values], n_layers
        )
        # Each float32 sum of squares in its exact range (a slot is in float32 or float64 for the whole pass, so
        # its sum is all float32 norms, one per output where a layer has several).
        low, high = EXACT_FLOAT32_NORM
        sums = {SIGNAL_FORWARD: forward_sq, SIGNAL_BACKWARD: backward_sq}
        exact = all(low * low <= sums[slot][index] <= high * high for slot, index in self.narrow_slots)
        return forward_sq, backward_sq, backward_seen, exact


class OutputWatch:
    """The layers' forward hooks and their outputs' gradients, for one probe.

    Hook bodies are kept minimal: each keeps one reduction (OutputNorms); the host sees a pass's at once. Passes
    take their backward by torch.autograd.grad (``autograd_passes``): the forward hooks keep the outputs'
    gradient edges, and autograd.grad takes their gradients together. A tensor of LARGE_NUMEL elements or more
    has its output's gradient measured in a hook on the tensor instead, so that the backward frees or reuses
    the gradient as it would without the probe. A distributed scan's passes run .backward() and take every
    output gradient in a hook on the tensor.
    """

    def __init__(self, layers: list[tuple[str, nn.Module]], norms: OutputNorms, fp16: Fp16Ranges, fast: bool) -> None:
        self.layers = layers
        self.norms = norms
        self.fp16 = fp16
        self._gradient_edge = gradient_edge_function(fast)
        self.first = True
        self.autograd_passes = False
        self.order: list[int] = []  # layer indices in first-execution order
        self._batched = [False] * len(layers)  # see start_pass
        self._seen: set[int] = set()
        self.calls = [0] * len(layers)
        self.numel = [0] * len(layers)
        # (layer, gradient edge of an output) whose gradient autograd.grad returns: the edge, not the tensor,
        # so the backward frees each output as it would without the probe
        self._edges: list[tuple[int, Any]] = []
        # Outputs of LARGE_NUMEL elements or more are measured by a hook on the tensor instead: autograd.grad
        # would keep each one's gradient until it returns, where the backward frees or reuses it at once.
        # (layer, edge, whether the layer's input carries a gradient): autograd.grad is asked for the edges
        # of those whose input does not (where the backward signal starts) so that the backward reaches the
        # others, and for those it did not reach on an earlier pass (_reach_layers).
        self._hooked: list[tuple[int, Any, bool]] = []
        # Other autograd nodes read this pass (the skip walk's, hooked outputs' of .backward() passes): held with
        # the edges' until the graph's roots are gone (release_graph).
        self.graph_nodes: list[Any] = []
        self._fired: set[int] = set()  # layers whose hooked output gradient arrived this pass
        self._reach_layers: set[int] = set()
        self._backward_keys = [(SIGNAL_BACKWARD, index) for index in range(len(layers))]
        self._backward_hooks = [self._make_backward_hook(index) for index in range(len(layers))]
        self.last_layer: int | None = None  # the layer with weights that ran last (what an activation follows)
        # (layer, weak reference to its output) of the last layer hooked on the first pass, and layer -> the
        # scale-invariant norm layer that took that output as its input (see _note_normalized_input)
        self._previous_output: tuple[int, weakref.ref] | None = None
        self.normalized_by: dict[int, int] = {}
        # Layers whose first call's input carried no gradient history: each begins a path from the model's
        # inputs (a stem, an embedding, a decoder's token embedding), so the depth trend does not run across it.
        self.path_starts: set[int] = set()

    def start_pass(self, first: bool) -> None:
        """``first``: the first pass, whose output norms are taken in their hooks while it notes which outputs
        in-place ops overwrite."""
        self.first = first
        self._edges, self._hooked, self._fired = [], [], set()
        self.numel = [0] * len(self.layers)
        self.calls = [0] * len(self.layers)
        # Layers whose output this pass keeps for a batched norm, unless it is large (forward_hook's last case).
        if self.autograd_passes and not first:
            seen, norms = self._seen, self.norms
            unbatched = {index for slot, index in (*norms.wide_keys, *norms.immediate_keys) if slot == SIGNAL_FORWARD}
            self._batched = [index in seen and index not in unbatched for index in range(len(self.layers))]
        else:
            self._batched = [False] * len(self.layers)
        self.last_layer = None
        self._previous_output = None

    def ranked(self) -> list[int]:
        """Layer indices in execution order, then the layers that never ran in definition order."""
        return ranked(self.order, len(self.layers))

    def layers_run(self) -> list[str]:
        return [self.layers[i][0] or "(model)" for i in self.order]

    def forward_hook(self, index: int) -> Callable:
        key = (SIGNAL_FORWARD, index)
        backward_hook = self._backward_hooks[index]
        norms, gradient_edge = self.norms, self._gradient_edge
        keep = norms.keep

        # Runs once per layer per pass: kept to the few operations every output needs. The common case, one
        # small output of a layer that ran before, on a pass that batches its norms (see start_pass), takes the
        # short path: a 200-layer narrow net calls this 600 times a probe.
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.calls[index] += 1
            self.last_layer = index
            if (
                self._batched[index]
                and type(output) is torch.Tensor
                and output.requires_grad
                and output.numel() < LARGE_NUMEL
                and output.is_floating_point()
            ):
                self.numel[index] += output.numel()
                keep(key, output.detach())
                self._edges.append((index, gradient_edge(output)))
                return
            if index not in self._seen:
                self._seen.add(index)
                self.order.append(index)
            if self.first:
                self._note_normalized_input(index, module, args, output)
                if self.calls[index] == 1 and starts_path(args):
                    self.path_starts.add(index)
            if norms.last_output is not None:
                norms.note_overwrite()
            for tensor in (output,) if type(output) is torch.Tensor else tensors_in(output):
                if not tensor.is_floating_point():
                    continue
                norms.record(key, tensor.detach())
                self.numel[index] += tensor.numel()
                if not tensor.requires_grad:
                    continue
                if not self.autograd_passes:
                    tensor.register_hook(backward_hook)
                    self.graph_nodes.append(tensor.grad_fn)
                elif key in norms.immediate_keys or tensor.numel() >= LARGE_NUMEL:
                    # (a hook on the tensor sees the gradient of this version, before any in-place op on it)
                    tensor.register_hook(backward_hook)
                    self._hooked.append((index, gradient_edge(tensor), carries_grad(args)))
                else:
                    self._edges.append((index, gradient_edge(tensor)))

        return hook

    def _note_normalized_input(self, index: int, module: nn.Module, args: Any, output: Any) -> None:
        """Whether this norm layer's input is the very tensor the layer hooked before it returned: then that
        layer's output feeds the norm directly (read off the tensors, not the module names)."""
        previous = self._previous_output
        if previous is not None and isinstance(module, SCALE_INVARIANT_NORMS) and args and args[0] is previous[1]():
            self.normalized_by.setdefault(previous[0], index)
        self._previous_output = (index, weakref.ref(output)) if isinstance(output, torch.Tensor) else None

    def take_gradients(self, loss: torch.Tensor, extra: list[torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
        """The gradients of the outputs' edges by torch.autograd.grad, recorded, together with those of ``extra``
        (returned, in order). Without parameters among ``extra`` it runs only the part of the backward graph
        that leads to the outputs; with them it costs what .backward() does, without a Python hook per output
        or a write to any .grad."""
        edges = [edge for _, edge in self._edges]
        reach = [edge for index, edge, carried in self._hooked if not carried or index in self._reach_layers]
        if not edges and not extra and not reach:
            reach = [edge for _, edge, _ in self._hooked]
        inputs = [*edges, *extra, *reach]
        if not inputs:
            return ()
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        for (index, _), grad in zip(self._edges, grads):
            if grad is not None:
                self._record_gradient(index, grad)
        # A hooked output the backward did not reach (its input's gradient comes from elsewhere than a layer,
        # or it does not reach the loss): its edge is asked for from the next pass on.
        self._reach_layers.update(index for index, _, _ in self._hooked if index not in self._fired)
        return grads[len(edges) : len(edges) + len(extra)]

    def release_graph(self) -> None:
        """Let go of the autograd nodes this pass read (see release_nodes): once the graph's roots are gone."""
        nodes = [edge.node for _, edge in self._edges]
        nodes += [edge.node for _, edge, _ in self._hooked]
        nodes += self.graph_nodes
        self._edges, self._hooked, self.graph_nodes = [], [], []
        release_nodes(nodes)

    def _make_backward_hook(self, index: int) -> Callable:
        def hook(grad: torch.Tensor) -> None:
            self._fired.add(index)
            self._record_gradient(index, grad)

        return hook

    def _record_gradient(self, index: int, grad: torch.Tensor) -> None:
        self.norms.record(self._backward_keys[index], grad)
        if self.fp16.amp is not None:
            self.fp16.count(index, grad)
