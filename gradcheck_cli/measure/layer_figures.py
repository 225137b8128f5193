"""Per-layer figures, computed one way for the scan (probe.py) and the training monitor (monitor.py).

Which layers there are (the modules that hold parameters), the order they are reported in (the order the forward
pass first ran them, then those that never ran), which layer owns a parameter that several hold (tied weights: the
first to run), each layer's weight norm, std and fan-in, its parameter-gradient figures, its output RMS and
per-sample output-gradient RMS from the hooked norms, and the range where a float32 norm is exact. The monitor once
kept a copy of these that had drifted from the scan's: tied weights given in definition order, another exactness
bound, another std (issue 24). tests/test_layer_figures.py feeds both the same model and batch and compares every
figure.

Norms are taken on the device and brought to the host by the caller, with its own figures, in one transfer.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
from torch import nn

from gradcheck_cli.measure.torch_compat import direct_parameters, private_hooks_work

# Norms are reduced in float64: a vanishing gradient of 1e-30 squares to 1e-60, which float32 flushes to
# zero (and an exploding one of 1e20 overflows), so float32 norms would hide the very thing we measure.
NORM_DTYPE = torch.float64
# A float32 norm is exact (to float32 precision) inside this range. Below it, elements whose squares
# underflow (|x| < 1e-19) could have mattered: they add at most n * 1e-38 to the sum of squares, which
# is below 1e-9 of it for any n < 1e11 here. Above it a square could overflow (|x| > 1.8e19).
EXACT_FLOAT32_NORM = (1e-10, 1e15)
# Weights of one shape are stacked this much at a time to be reduced as rows (see _norms_and_sums): a copy
# the allocator serves from memory it holds.
WEIGHT_STACK_BYTES = 2**20
ROOT_NAME = "(model)"  # how a layer list shows the model itself, where the root holds parameters

Owned = tuple[int, bool, nn.Parameter]  # (owning layer, is-a-weight, parameter)


class Reducer(Protocol):
    """Sums a probe's figures over the processes of a distributed scan (gradcheck_cli.load.distributed), each of
    which measured an equal slice of the batch on its part of the model."""

    world_size: int

    def local(self, tensor: torch.Tensor) -> torch.Tensor:
        """What this process counts of a parameter or gradient: its shard, or nothing for a replica."""
        ...

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over the processes (one collective)."""
        ...


# ------------------------------------------------------------------------------------- which layers there are


def owns_parameters(module: nn.Module) -> bool:
    # (most modules own none: their empty dict is told apart without starting a generator)
    own = direct_parameters(module, private_hooks_work())
    return bool(own) and any(p is not None for p in own.values())


def parameter_layers(modules: Iterable[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """The layers of a model, given its named_modules(): the modules that hold parameters of their own, in
    definition order."""
    return [(name, module) for name, module in modules if owns_parameters(module)]


def shown_name(name: str) -> str:
    return name or ROOT_NAME


def local_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """A module's own parameters, read off its registry: named_parameters(recurse=False) walks a generator
    with a memo of hashed tensors, which costs more than it should on a 1000-layer model."""
    return [(name, p) for name, p in direct_parameters(module, private_hooks_work()).items() if p is not None]


def is_weight(local_name: str) -> bool:
    return "weight" in local_name


def layer_type(module: nn.Module) -> str:
    """The module's class as the user wrote it: FSDP2's fully_shard and DDP's replicate give a sharded
    module a subclass of their own (FSDPLinear), which the report does not show."""
    return _class_as_written(type(module))


@functools.cache
def _class_as_written(cls: type) -> str:
    wrappers = ("torch.distributed.", "torch.nn.parallel.")
    return next(c for c in cls.__mro__ if not c.__module__.startswith(wrappers)).__name__


def ranked(order: list[int], count: int) -> list[int]:
    """Layer indices in the order they are reported: ``order`` (first-execution order), then the layers that
    never ran, in definition order."""
    seen = set(order)
    return order + [index for index in range(count) if index not in seen]


def owned_parameters(layers: list[tuple[str, nn.Module]], ranking: list[int]) -> list[Owned]:
    """(owning layer, is-a-weight, parameter) for every trainable parameter, each listed once, in ``ranking``'s
    order. A parameter registered on several modules (tied embeddings) belongs to the first of them to run."""
    owned: list[Owned] = []
    seen: set[int] = set()
    for index in ranking:
        for name, param in local_parameters(layers[index][1]):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if param.requires_grad:
                owned.append((index, is_weight(name), param))
    return owned


def held_parameters(layers: list[tuple[str, nn.Module]], ranking: list[int]) -> list[tuple[int, bool, str | None]]:
    """Per layer of ``ranking``, in its order: (how many parameter elements it holds, whether any of them is
    trainable, the layer that owns a parameter it holds too: the first in ``ranking`` to hold it, as
    owned_parameters gives it (tied weights); None where it shares none)."""
    owners: dict[int, str] = {}
    held = []
    for index in ranking:
        name = shown_name(layers[index][0])
        own = [p for _, p in local_parameters(layers[index][1])]
        shared = None
        for param in own:
            owner = owners.setdefault(id(param), name)
            if owner != name:
                shared = owner
        held.append((sum(p.numel() for p in own), any(p.requires_grad for p in own), shared))
    return held


# ------------------------------------------------------------------------------------- norms on the device


def narrow_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float32 for float32 and half types; a float64 tensor stays float64 (a norm cannot narrow it)."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def fused_norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The 2-norm of each tensor as a 0-d tensor in narrow_dtype: fused, one call per dtype present."""
    norms: list[torch.Tensor | None] = [None] * len(tensors)
    for dtype in {t.dtype for t in tensors}:
        group = [k for k, t in enumerate(tensors) if t.dtype == dtype]
        target = None if dtype in (torch.float32, torch.float64) else torch.float32
        for k, norm in zip(group, torch._foreach_norm([tensors[k] for k in group], 2, dtype=target)):
            norms[k] = norm
    return norms


def stack_on(values: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """One tensor of 0-d reductions, on ``device``."""
    return join_on(torch.stack, values, device)


def join_on(
    join: Callable[[list[torch.Tensor]], torch.Tensor], values: list[torch.Tensor], device: torch.device
) -> torch.Tensor:
    """``join`` (torch.stack or torch.cat) of the tensors, on ``device``. Those of a model spread over devices
    lie on each and cannot be joined as they are: brought to one first (asking each its device costs more)."""
    try:
        joined = join(values)
    except RuntimeError:
        return join([value.to(device) for value in values])
    return joined if joined.device == device else joined.to(device)


def exact_norms(tensors: list[torch.Tensor], norms: list[float], reducer: Reducer | None = None) -> list[float]:
    """The float32 norms where they are exact; the others (and exact zeros, which an underflow also
    gives) taken again in float64: a second transfer, only for extreme models. With ``reducer`` the norms
    given are global and ``tensors`` this process's shards: every process takes the same ones again."""
    low, high = EXACT_FLOAT32_NORM
    values = list(norms)
    again = [k for k, norm in enumerate(norms) if not low <= norm <= high]
    if again:
        stacked = float64_norms([tensors[k] for k in again])
        if reducer is not None:
            stacked = reducer.sum(stacked.square()).sqrt()
        for k, value in zip(again, stacked.tolist()):
            values[k] = value
    return values


def float64_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The float64 norm of each tensor, in one tensor on the first one's device. A float64 norm of a float32 tensor
    reduces a float64 copy of it, and on the CPU the 0-d results torch._foreach_norm keeps between those copies
    fragment the heap so that each copy takes fresh memory (a 2,000-layer MLP of width 256 grew by 1 GB, issue 21):
    there they are taken one at a time into the one tensor (foreach loops over them there anyway, no faster)."""
    device = tensors[0].device
    if device.type != "cpu":
        return torch.stack([norm.to(device) for norm in torch._foreach_norm(tensors, 2, dtype=NORM_DTYPE)])
    norms = torch.empty(len(tensors), dtype=NORM_DTYPE)
    for k, tensor in enumerate(tensors):
        if tensor.is_cpu:
            torch.linalg.vector_norm(tensor, dtype=NORM_DTYPE, out=norms[k])
        else:
            norms[k] = torch.linalg.vector_norm(tensor, dtype=NORM_DTYPE)
    return norms


def sum_over_processes(flat: torch.Tensor, n_norms: int, reducer: Reducer) -> torch.Tensor:
    """A pass's figures summed over the processes of a distributed scan, in one collective before the one
    host transfer: the first ``n_norms`` values are norms, summed as squares and returned as norms; the rest
    (the loss, time steps' sums of squares, counts) are summed as they are.

    Each of the N processes measured an equal slice of b = B/N samples of a global batch of B, with the loss
    the mean over its slice, L_r = (1/b) sum_i l_i, whose mean over processes is the whole batch's loss L.
    - forward: sums of squares and element counts add up over the slices; the RMS is their ratio.
    - backward: a sample's output gradient on its process is dL_r/dy_i = (1/b) dl_i/dy_i, so the per-sample
      RMS the probe reports, sqrt((1/B) sum_i |dl_i/dy_i|^2), is sqrt((1/B) b^2 S) with S the sum over
      processes of their |dL_r/dy|^2; that is sqrt(B * S/N^2), the one-process formula sqrt(B * |dL/dy|^2)
      with S/N^2 in place of |dL/dy|^2 (_unpack divides by N^2 and multiplies the batch size by N).
      Exact for every output that carries the batch dimension; an output the whole batch shares (a position
      table) has the gradient of a sum over processes, whose norm this does not give.
    - parameter gradients: DDP and FSDP average them over processes, which for equal slices is the gradient
      of L; Reducer.local counts each element once (a DTensor's shards, a replica on one process only).
    - the loss: the mean of the processes' losses.
    """
    squares = torch.cat([flat[:n_norms].square(), flat[n_norms:]])
    total = reducer.sum(squares)
    return torch.cat([total[:n_norms].sqrt(), total[n_norms:]])


# ------------------------------------------------------------------------------------- weight figures


class WeightPlan:
    """Which tensors give each layer's weight figures: planned once for a list of layers, measured on the device
    (``measure``) and read from the host values (``read``), so that a caller can bring them to the host with
    its own figures. The weight norm is over all of a layer's weights; the std and fan-in are of its main weight
    (its first of 2 or more dimensions)."""

    def __init__(self, layers: list[tuple[str, nn.Module]]):
        self.count = len(layers)
        # One walk over the layers: every weight, the layer it belongs to, and each layer's main weight.
        self._weights: list[torch.Tensor] = []
        self._owners: list[int] = []
        self._mains: list[tuple[int, int]] = []  # (layer, position in weights)
        # Parameters that gate a path when exactly zero (issue 22), told by value and shape: every weight, and any
        # other parameter of one element (ReZero's alpha, SkipInit's) or of 2+ dimensions (NF nets' per-channel
        # gains); a 1-D vector that is not a weight is a bias, which adds and gates nothing. Their norms are taken
        # with the weights': (layer, parameter name, the parameter), the weights first, in their order.
        weight_gates: list[tuple[int, str, nn.Parameter]] = []
        other_gates: list[tuple[int, str, nn.Parameter]] = []
        for index, (_, module) in enumerate(layers):
            has_main = False
            for name, p in direct_parameters(module, private_hooks_work()).items():
                if p is None:
                    continue
                if not is_weight(name):
                    if p.numel() == 1 or p.dim() >= 2:
                        other_gates.append((index, name, p))
                    continue
                if not has_main and p.dim() >= 2:
                    has_main = True
                    if p.numel() > 1:
                        self._mains.append((index, len(self._weights)))
                self._weights.append(p)
                self._owners.append(index)
                weight_gates.append((index, name, p))
        self._gates = weight_gates + other_gates
        self.fan_in: list[int | None] = [None] * self.count
        for index, k in self._mains:
            self.fan_in[index] = math.prod(self._weights[k].shape[1:])

    def measure(self, reducer: Reducer | None = None) -> tuple[list[torch.Tensor], torch.Tensor] | None:
        """(the tensors measured, one float64 tensor of their float32 norms and the main weights' sums) on the
        device, for ``read``; None where the layers hold no weight or gate. With ``reducer``, from this
        process's shards, summed over processes."""
        if not self._gates:
            return None
        tensors = [p for _, _, p in self._gates]
        flat = [p.detach() for p in tensors] if reducer is None else [reducer.local(p.detach()) for p in tensors]
        # In float32, taken again in float64 only where that would not be exact (float64 copies of a large
        # model's weights cost more than the passes). The std comes from the norm and the sum: one read each.
        values = _norms_and_sums(flat, [k for _, k in self._mains])
        if reducer is not None:
            values = sum_over_processes(values, len(flat), reducer)
        return flat, values

    def read(self, flat: list[torch.Tensor], host: list[float], reducer: Reducer | None = None) -> list[dict[str, Any]]:
        """Per layer, its LayerStats weight figures (weight_norm, weight_std, fan_in, zero_parameters; absent
        where it has none) from ``measure``'s tensors and its values on the host."""
        figures: list[dict[str, Any]] = [{} for _ in range(self.count)]
        count = len(flat)
        numel = [p.numel() for _, _, p in self._gates]  # a DTensor's numel is the whole tensor's
        norm_values = exact_norms(flat, host[:count], reducer)
        squares: dict[int, float] = {}
        for index, norm in zip(self._owners, norm_values):
            squares[index] = squares.get(index, 0.0) + norm * norm
        for index, square in squares.items():
            figures[index]["weight_norm"] = math.sqrt(square)
        for (index, k), total in zip(self._mains, host[count:]):
            figures[index]["weight_std"] = _std(flat[k], numel[k], norm_values[k], total, reducer)
            figures[index]["fan_in"] = self.fan_in[index]
        for (index, name, p), norm in zip(self._gates, norm_values):
            if norm == 0.0 and p.requires_grad:  # a frozen zero stays zero: no design of the kind
                figures[index].setdefault("zero_parameters", []).append(name)
        return figures


def weight_figures(layers: list[tuple[str, nn.Module]], reducer: Reducer | None = None) -> list[dict[str, Any]]:
    """Norm, std and fan-in of each layer's weights (WeightPlan), measured and read at once."""
    plan = WeightPlan(layers)
    measured = plan.measure(reducer)
    if measured is None:
        return [{} for _ in layers]
    flat, values = measured
    return plan.read(flat, values.tolist(), reducer)


def _norms_and_sums(tensors: list[torch.Tensor], summed: list[int]) -> torch.Tensor:
    """The float32 norm of every tensor, then the sum of those at the positions ``summed``: one float64
    tensor, in that order. Small tensors of one shape (a deep narrow net's layers share theirs) are stacked, up
    to WEIGHT_STACK_BYTES at a time, and reduced as rows: three ops a stack, against a fused norm's per-tensor
    steps and a sum each (on a 200-layer MLP's weights 0.3 ms against 1.1). The order does not depend on
    how they were grouped, so a distributed scan's processes sum the same values."""
    device = tensors[0].device
    groups: dict[tuple, list[int]] = {}
    for k, tensor in enumerate(tensors):
        groups.setdefault((tensor.shape, tensor.dtype, tensor.device), []).append(k)
    stacked: list[int] = []  # positions, in the order of the rows below
    norm_rows: list[torch.Tensor] = []
    sum_rows: list[torch.Tensor] = []
    alone: list[int] = []
    for members in groups.values():
        first = tensors[members[0]]
        per_stack = WEIGHT_STACK_BYTES // max(1, first.numel() * first.element_size())
        if len(members) < 2 or per_stack < 16:  # a large tensor's steps cost little beside reading it: no copy
            alone.extend(members)
            continue
        dtype = narrow_dtype(first)
        for start in range(0, len(members), per_stack):
            chunk = members[start : start + per_stack]
            rows = torch.stack([tensors[k] for k in chunk]).view(len(chunk), first.numel())
            norm_rows.append(torch.linalg.vector_norm(rows, dim=1, dtype=dtype))
            sum_rows.append(torch.sum(rows, dim=1, dtype=dtype))
            stacked.extend(chunk)
    if alone:
        norm_rows.append(stack_on(fused_norms([tensors[k] for k in alone]), device))
    norms = join_on(torch.cat, norm_rows, device).to(NORM_DTYPE)
    norms = torch.empty_like(norms).index_copy_(0, torch.tensor([*stacked, *alone], device=device), norms)
    if not summed:
        return norms
    in_stacks = set(stacked)
    alone_summed = [k for k in summed if k not in in_stacks]
    if alone_summed:  # a sum each, only where asked for
        sum_rows.append(stack_on([torch.sum(tensors[k], dtype=narrow_dtype(tensors[k])) for k in alone_summed], device))
    sum_order = [*stacked, *alone_summed]
    sums = join_on(torch.cat, sum_rows, device).to(NORM_DTYPE)
    sums = torch.zeros(len(tensors), dtype=NORM_DTYPE, device=device).index_copy_(
        0, torch.tensor(sum_order, device=device), sums
    )
    return torch.cat([norms, sums.index_select(0, torch.tensor(summed, device=device))])


def _std(weight: torch.Tensor, n: int, norm: float, total: float, reducer: Reducer | None = None) -> float:
    """The sample std of a weight of ``n`` elements from its norm and sum. Where the mean dominates (a weight
    filled with one value), the difference of the two would lose the spread to rounding: taken directly
    there (from the shards' squared deviations from the global mean, with ``reducer``)."""
    squares, mean_squares = norm * norm, total * total / n
    if not math.isfinite(squares) or mean_squares > 0.999 * squares:
        if reducer is None:
            return float(weight.to(NORM_DTYPE).std())
        deviations = (weight.to(NORM_DTYPE) - total / n).square().sum().reshape(1)
        return math.sqrt(float(reducer.sum(deviations)) / (n - 1))
    return math.sqrt((squares - mean_squares) / (n - 1))


# ------------------------------------------------------------------------------------- gradient figures


def gradient_squares(
    owned: list[Owned], norms: list[float], count: int
) -> tuple[list[float | None], list[float | None], list[bool], float]:
    """From the gradient norms of ``owned`` parameters (a norm each, in order), per layer of ``count``: the sum of
    squares of its weights' gradient norms and of its other parameters' (None where it owns none with a
    gradient) and whether any was not finite; and the sum of squares of them all."""
    weight_sq: list[float | None] = [None] * count
    other_sq: list[float | None] = [None] * count
    nonfinite = [False] * count
    total_sq = 0.0
    for (owner, weight, _), value in zip(owned, norms):
        total_sq += value * value
        if not math.isfinite(value):
            nonfinite[owner] = True
        bucket = weight_sq if weight else other_sq
        bucket[owner] = (bucket[owner] or 0.0) + value * value
    return weight_sq, other_sq, nonfinite, total_sq


def gradient_figures(
    weight_sq: float | None, other_sq: float | None, weight_norm: float | None
) -> tuple[float | None, float | None, float, float | None]:
    """A layer's (weight_grad_norm, other_grad_norm, grad_norm, relative_grad) from gradient_squares' sums, where
    it has one of them (None for each it lacks): relative_grad is ||g_W|| / ||W||, where ||W|| is not zero."""
    weight = None if weight_sq is None else math.sqrt(weight_sq)
    relative = weight / weight_norm if weight is not None and weight_norm else None
    other = None if other_sq is None else math.sqrt(other_sq)
    return weight, other, math.sqrt((weight_sq or 0.0) + (other_sq or 0.0)), relative


# ------------------------------------------------------------------------------------- output figures

# What a hooked norm is of: a layer's output, or the gradient arriving at that output.
SIGNAL_FORWARD, SIGNAL_BACKWARD = 0, 1


def signal_squares(
    slots: Iterable[tuple[int, int]], norms: Iterable[float], count: int
) -> tuple[list[float], list[float], list[bool]]:
    """From the norms of the hooked outputs and output gradients of a pass (``slots``: (SIGNAL_FORWARD or
    SIGNAL_BACKWARD, layer) of each norm, in order), per layer of ``count``: the sum of squares of its output
    norms, of its output-gradient norms, and whether any output gradient reached it."""
    forward_sq, backward_sq = [0.0] * count, [0.0] * count
    backward_seen = [False] * count
    # (a plain loop: it runs for every output and output gradient of every pass)
    for (kind, index), value in zip(slots, norms):
        if kind == SIGNAL_FORWARD:
            forward_sq[index] += value * value
        else:
            backward_sq[index] += value * value
            backward_seen[index] = True
    return forward_sq, backward_sq, backward_seen


def output_rms(forward_sq: float, numel: int) -> float:
    """A layer's output RMS (LayerStats.forward_rms) over the ``numel`` elements of its outputs in a pass."""
    return math.sqrt(forward_sq / numel)


def output_gradient_rms(backward_sq: float, batch_size: int) -> float:
    """The per-sample RMS of a layer's output gradient (LayerStats.backward): the loss is a batch mean, so each
    sample's own gradient is B times its share; sqrt(B * sum of squares) = B * RMS over samples."""
    return math.sqrt(batch_size * backward_sq)


def median_of_sorted(ordered: list[float]) -> float:
    """statistics.median of values already sorted (the probe sorts them once for the median and the spread)."""
    middle = len(ordered) // 2
    return float(ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2)
