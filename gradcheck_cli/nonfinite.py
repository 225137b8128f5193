"""Find where the first NaN/Inf of a pass came from.

The probe only knows *that* a pass went non-finite: its hooks keep 0-d norms, and a NaN anywhere makes
every norm after it NaN. This module says *where*: it re-runs one pass with every module watched and
names the module that turned finite values into non-finite ones (its output in the forward pass, or
the gradient it sends back in the backward pass), and the modules that merely passed the NaN on.
It is diagnostic-only, run after a NaN was seen, so it counts values on the host freely.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from gradcheck_cli.stats import NonfiniteOrigin

if TYPE_CHECKING:  # the probe calls this module: import its types for annotations only
    from gradcheck_cli.probe import Batch, LossFn

PASSED_ON_LIMIT = 20  # a deep model passes a NaN through hundreds of modules; the first few say enough


def trace_nonfinite(model: nn.Module, batch: Batch, loss_fn: LossFn) -> NonfiniteOrigin | None:
    """Run one forward, loss and backward pass with every module watched; None when all stayed finite.

    The caller keeps the model as found (``.grad``, train/eval mode, buffers); this only resets
    ``.grad`` before its backward pass and removes every hook it added, also when the model raises.
    TorchScript modules take no hooks: a NaN made inside one is put on the watched module that called it.
    """
    from gradcheck_cli.probe import clear_frames, release_nodes  # (the probe imports this module)

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
        watcher = _Watcher(names, hooks, nodes)
        for module in model.modules():
            if isinstance(module, torch.jit.ScriptModule):
                continue
            hooks.callback(module.register_forward_pre_hook(watcher.before, with_kwargs=True).remove)
            hooks.callback(module.register_forward_hook(watcher.after, with_kwargs=True).remove)
            for param_name, param in module.named_parameters(recurse=False):
                if param.requires_grad:
                    hooks.callback(param.register_hook(partial(watcher.parameter_grad, module, param_name)).remove)
        output = model(*batch.args, **batch.kwargs)
        # Checkpointed modules re-run their forward during backward: those calls are not new evidence.
        watcher.watching = False
        origin = _forward_origin(watcher.calls)
        if origin is not None:
            return origin
        loss = loss_fn(output, batch)
        output_ranges = _ranges(_floats(output))
        if not _tally([loss]).finite:
            return NonfiniteOrigin("loss", None, None, f"loss: {_value(loss)} from finite model outputs", output_ranges)
        if not loss.requires_grad:
            return None
        for param in model.parameters():
            param.grad = None  # gradients left from earlier passes would read as this pass's
        loss.backward()
        return _backward_origin(watcher.events, loss, output_ranges)


@dataclass
class _Tally:
    nan: int = 0
    pos_inf: int = 0
    neg_inf: int = 0
    values: int = 0

    @property
    def finite(self) -> bool:
        return self.nan == 0 and self.pos_inf == 0 and self.neg_inf == 0

    @property
    def mask_like(self) -> bool:
        # An additive attention mask holds -inf on purpose (softmax turns it into 0), and nothing else.
        return self.nan == 0 and self.pos_inf == 0 and self.neg_inf > 0

    def __add__(self, other: _Tally) -> _Tally:
        return _Tally(
            self.nan + other.nan, self.pos_inf + other.pos_inf, self.neg_inf + other.neg_inf, self.values + other.values
        )

    def __str__(self) -> str:
        return f"{self.nan} NaN, {self.pos_inf + self.neg_inf} Inf of {self.values} values"


@dataclass(eq=False)
class _Call:
    """One call of one module in the watched forward pass."""

    name: str
    type: str
    module_id: int
    parent: _Call | None  # the watched call this one ran inside
    order: int  # when it was called (its parent comes first; forward hooks fire the other way round)
    inputs: _Tally  # over its floating-point inputs, masks left out
    masked: int  # -inf values in inputs read as attention masks
    input_ranges: list[tuple[float, float]]
    output: _Tally = field(default_factory=_Tally)

    def ancestors(self) -> set[str]:
        names, call = set(), self.parent
        while call is not None:
            names.add(call.name)
            call = call.parent
        return names


@dataclass
class _GradEvent:
    kind: str  # "output" (the gradient arriving at a module's output), "input" or "parameter"
    call: _Call
    what: str  # for the detail: "its input", "its parameter weight"
    tally: _Tally
    group: int  # hooks on one tensor fire one after another with the same gradient object: one group


class _Watcher:
    """Hook bodies: count what each module took in and gave out, and the gradients in firing order."""

    def __init__(self, names: dict[int, str], hooks: ExitStack, nodes: list[Any]) -> None:
        self.names = names
        self.hooks = hooks  # tensor hooks made during forward are removed with the module hooks
        self.nodes = nodes  # the nodes of hooked tensors: see trace_nonfinite
        self.watching = True
        self.calls: list[_Call] = []  # in the order their forward hooks fired: children before parents
        self.events: list[_GradEvent] = []
        self._active: list[_Call] = []
        self._first_call: dict[int, _Call] = {}
        self._started = 0
        self._last_grad: torch.Tensor | None = None

    def before(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not self.watching:
            return
        # Counted before the call: an in-place module (ReLU(inplace=True)) overwrites its input.
        inputs = list(_floats((args, kwargs)))
        tallies = [_tally([tensor]) for tensor in inputs]
        # A transformer's -inf mask is no NaN coming in: left out, or every attention would look passed-on.
        tally = sum((t for t in tallies if not t.mask_like), _Tally())
        masked = sum(t.neg_inf for t in tallies if t.mask_like)
        parent = self._active[-1] if self._active else None
        call = _Call(
            self.names[id(module)],
            type(module).__name__,
            id(module),
            parent,
            self._started,
            tally,
            masked,
            _ranges(inputs) if tally.finite else [],
        )
        self._started += 1
        self._active.append(call)
        self._first_call.setdefault(id(module), call)
        # Hooked now, before any in-place change, so the hook sees the gradient of the value it took in.
        self._watch(inputs, "input", call, "its input")

    def after(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not self.watching:
            return
        # A call whose forward raised and was caught by its caller never reaches here: drop it too.
        while self._active[-1].module_id != id(module):
            self._active.pop()
        call = self._active.pop()
        outputs = list(_floats(output))
        call.output = _tally(outputs)
        self.calls.append(call)
        self._watch(outputs, "output", call, "its output")

    def parameter_grad(self, module: nn.Module, param_name: str, grad: torch.Tensor) -> None:
        call = self._first_call.get(id(module))
        if call is not None:  # a module never called: its weights were used by its parent's own code
            self._record("parameter", call, f"its parameter {param_name}", grad)

    def _watch(self, tensors: list[torch.Tensor], kind: str, call: _Call, what: str) -> None:
        for tensor in tensors:
            if tensor.requires_grad:
                self.hooks.callback(tensor.register_hook(partial(self._record, kind, call, what)).remove)
                if tensor.grad_fn is not None:
                    self.nodes.append(tensor.grad_fn)

    def _record(self, kind: str, call: _Call, what: str, grad: torch.Tensor | None) -> None:
        if grad is None:
            return
        group = self.events[-1].group if self.events else 0
        if grad is not self._last_grad:
            group += 1
        self._last_grad = grad
        self.events.append(_GradEvent(kind, call, what, _tally([grad]), group))


def _forward_origin(calls: list[_Call]) -> NonfiniteOrigin | None:
    # Children's forward hooks fire before their parent's, so the first call that made a NaN from
    # finite inputs is the innermost; a parent is only reached when its own code made it.
    origin = next((c for c in calls if c.inputs.finite and not c.output.finite and not _passes_mask(c)), None)
    if origin is not None:
        detail = f"output: {origin.output}"
        if origin.masked:
            detail += f" (its inputs also held {origin.masked} -Inf, read as an attention mask)"
    else:
        took_in = [c for c in calls if not c.inputs.finite]
        if not took_in:
            return None
        # No module made it: it came in from outside, the batch itself when the model is the first to see it.
        origin = min(took_in, key=lambda c: c.order)
        source = (
            "the batch itself is not finite" if origin.parent is None else "it came from outside the watched modules"
        )
        detail = f"input: {origin.inputs}; {source}"
    passers = [c.name for c in calls if not c.inputs.finite and not c.output.finite]
    return NonfiniteOrigin(
        "forward", origin.name, origin.type, detail, origin.input_ranges, _passed_on(passers, origin)
    )


def _passes_mask(call: _Call) -> bool:
    """A module that took a mask in and gave only -inf out (expanded, reshaped it) made nothing new."""
    return call.masked > 0 and call.output.mask_like


def _backward_origin(events: list[_GradEvent], loss: torch.Tensor, output_ranges: list) -> NonfiniteOrigin | None:
    call_fine: dict[_Call, bool] = {}  # per call: every gradient that reached its output so far was finite
    module_fine: dict[int, bool] = {}  # the same over all calls of a module (its weights add them up)
    makers: list[_GradEvent] = []
    passers: list[_GradEvent] = []
    for event in events:
        call = event.call
        if event.kind == "output":
            call_fine[call] = call_fine.get(call, True) and event.tally.finite
            module_fine[call.module_id] = module_fine.get(call.module_id, True) and event.tally.finite
            continue
        fine = module_fine.get(call.module_id) if event.kind == "parameter" else call_fine.get(call)
        # None: no gradient reached its output, so this one came through another user of the tensor.
        if not event.tally.finite and fine is not None:
            (makers if fine else passers).append(event)
    passer_names = [event.call.name for event in passers]
    if makers:
        origin = makers[0]
        for event in makers[1:]:
            # An ancestor's input gradient is its child's: the innermost module made it.
            if origin.call.name in event.call.ancestors():
                origin = event
        call = origin.call
        detail = f"gradient w.r.t. {origin.what}: {origin.tally}; gradient at its output finite"
        return NonfiniteOrigin(
            "backward", call.name, call.type, detail, call.input_ranges, _passed_on(passer_names, call)
        )
    first_bad = next((event for event in events if not event.tally.finite), None)
    if first_bad is None:
        return None
    # No module turned a finite output gradient into a non-finite one, so code between modules did: the
    # code that used the output of the outermost module producing this tensor, i.e. its caller's own
    # forward code, or the loss function when that module is the model itself.
    producers = [e.call for e in events if e.group == first_bad.group and e.kind == "output"] or [first_bad.call]
    producer = min(producers, key=lambda c: len(c.ancestors()))
    parent = producer.parent
    if parent is None:
        detail = f"gradient of the loss w.r.t. the model output: {first_bad.tally}; the loss ({_value(loss)}) is finite"
        return NonfiniteOrigin("loss", None, None, detail, output_ranges, _passed_on(passer_names, None))
    detail = f"gradient at the output of its child {producer.name}: {first_bad.tally}; made by its own code between child modules"
    return NonfiniteOrigin(
        "backward", parent.name, parent.type, detail, parent.input_ranges, _passed_on(passer_names, parent)
    )


def _passed_on(names: list[str], origin: _Call | None) -> list[str]:
    """Names in firing order, once each, leaving out the origin and its containers (they hold it, not pass it)."""
    skip = origin.ancestors() | {origin.name} if origin is not None else set()
    return [name for name in dict.fromkeys(names) if name not in skip][:PASSED_ON_LIMIT]


def _floats(value: Any) -> Iterator[torch.Tensor]:
    """Every floating-point tensor inside nested tuples, lists and dicts (outputs are often tuples)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _floats(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _floats(item)


def _tally(tensors: Iterable[torch.Tensor]) -> _Tally:
    tally = _Tally()
    for tensor in tensors:
        tensor = tensor.detach()
        tally.nan += int(torch.isnan(tensor).sum())
        tally.pos_inf += int(torch.isposinf(tensor).sum())
        tally.neg_inf += int(torch.isneginf(tensor).sum())
        tally.values += tensor.numel()
    return tally


def _ranges(tensors: Iterable[torch.Tensor]) -> list[tuple[float, float]]:
    """(min, max) over the finite values of each tensor; tensors with none are left out."""
    ranges = []
    for tensor in tensors:
        values = tensor.detach()[torch.isfinite(tensor.detach())]
        if values.numel():
            ranges.append((float(values.min()), float(values.max())))
    return ranges


def _value(loss: torch.Tensor) -> str:
    return f"{float(loss.detach()):.3g}" if loss.numel() == 1 else str(_tally([loss]))
