"""Find where the first NaN/Inf of a pass came from.

The probe only knows *that* a pass went non-finite: its hooks keep 0-d norms, and a NaN anywhere makes
every norm after it NaN. This module says *where*: it re-runs one pass with every module watched and
names the module that turned finite values into non-finite ones (its output in the forward pass, or
the gradient it sends back in the backward pass), and the modules that merely passed the NaN on.
Inside the module it names, a TorchFunctionMode (``torch.overrides``, public API) active during the watched
forward pass and loss names the op: the first torch call that turned finite inputs into NaN/Inf (a log of
negatives, a division by 0), or, for a NaN made in the backward pass, one whose slope is infinite at its
inputs (sqrt at 0), with the range of the operand out of its domain and the line of code that called it.
It is diagnostic-only, run after a NaN was seen, so it counts values on the host freely.
"""

from __future__ import annotations

import inspect
import itertools
import linecache
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from gradcheck_cli.common.stats import NonfiniteOp, NonfiniteOrigin
from gradcheck_cli.measure.torch_compat import clear_frames, release_nodes

if TYPE_CHECKING:  # the probe calls this module: import its types for annotations only
    from gradcheck_cli.common.batches import Batch, LossFn

PASSED_ON_LIMIT = 20  # a deep model passes a NaN through hundreds of modules; the first few say enough
OPS_PER_CALL = 4  # ops kept per module call and kind: the first says it, a few more let a mask be told apart
# A quotient that overflowed on a divisor no closer to 0 than this came from a large numerator, not a divisor
# near 0: no domain was left (the safe form clamps divisors at 1e-6 in float32, fixes.SAFE_OP_DEFAULT_EPS).
TINY_DIVISOR = 1e-6


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
        watcher = _Watcher(names, hooks, nodes)
        ops = _OpWatcher(watcher)
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
        origin = _forward_origin(watcher.calls)
        if origin is not None:
            return origin
        with ops:
            loss = loss_fn(output, batch)
        output_ranges = _ranges(_floats(output))
        if not _tally([loss]).finite:
            detail = f"loss: {_value(loss)} from finite model outputs"
            return NonfiniteOrigin("loss", None, None, detail, output_ranges, op=_made_op(ops.loss_ops))
        if not loss.requires_grad:
            return None
        for param in model.parameters():
            param.grad = None  # gradients left from earlier passes would read as this pass's
        loss.backward()
        return _backward_origin(watcher.events, loss, output_ranges, ops.loss_ops)


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
    ops: list[_SeenOp] = field(default_factory=list)  # ops of its own code (not its children's) worth naming

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
        self.busy = False  # in a hook body: the torch calls there are gradcheck's, not the model's

    @property
    def current(self) -> _Call | None:
        """The innermost module call running now; None outside the forward pass (in the loss)."""
        return self._active[-1] if self._active else None

    @contextmanager
    def _hook_body(self) -> Iterator[None]:
        self.busy = True
        try:
            yield
        finally:
            self.busy = False

    def before(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not self.watching:
            return
        with self._hook_body():
            self._before(module, args, kwargs)

    def _before(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
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
        with self._hook_body():
            self._after(module, output)

    def _after(self, module: nn.Module, output: Any) -> None:
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
        "forward",
        origin.name,
        origin.type,
        detail,
        origin.input_ranges,
        _passed_on(passers, origin),
        _made_op(origin.ops) if origin.inputs.finite else None,
    )


def _passes_mask(call: _Call) -> bool:
    """A module that took a mask in and gave only -inf out (expanded, reshaped it) made nothing new."""
    return call.masked > 0 and call.output.mask_like


def _backward_origin(
    events: list[_GradEvent], loss: torch.Tensor, output_ranges: list, loss_ops: list[_SeenOp]
) -> NonfiniteOrigin | None:
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
            "backward",
            call.name,
            call.type,
            detail,
            call.input_ranges,
            _passed_on(passer_names, call),
            _backward_op(call.ops),
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
        passed = _passed_on(passer_names, None)
        return NonfiniteOrigin("loss", None, None, detail, output_ranges, passed, _backward_op(loss_ops))
    detail = f"gradient at the output of its child {producer.name}: {first_bad.tally}; made by its own code between child modules"
    return NonfiniteOrigin(
        "backward",
        parent.name,
        parent.type,
        detail,
        parent.input_ranges,
        _passed_on(passer_names, parent),
        _backward_op(parent.ops),
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


# --- the op inside a module: a TorchFunctionMode sees every torch call of the model's own Python code


@dataclass
class _SeenOp:
    op: NonfiniteOp
    mask_like: bool  # made only -Inf from finite inputs: an additive mask made on purpose (log of a 0/1 mask)


# Ops with a domain, by the name torch gives them (in-place "log_" and operator "__rtruediv__" forms are
# reduced to these first): the domain their safe form keeps to.
_UNARY_DOMAINS = {
    "log": "log",
    "log2": "log",
    "log10": "log",
    "log1p": "log1p",
    "sqrt": "sqrt",
    "rsqrt": "rsqrt",
    "acos": "acos",
    "arccos": "acos",
    "asin": "asin",
    "arcsin": "asin",
    "atanh": "atanh",
    "arctanh": "atanh",
    "exp": "exp",
    "expm1": "exp",
    "reciprocal": "division",
}
# Binary ops: (the operand out of its domain, the other one) as positions in the call, and its domain.
_BINARY_DOMAINS = {
    "div": ((1, 0), "division"),
    "divide": ((1, 0), "division"),
    "true_divide": ((1, 0), "division"),
    "floor_divide": ((1, 0), "division"),
    "rdiv": ((0, 1), "division"),  # 1 / x calls x.__rdiv__(1)
    "pow": ((0, 1), "pow"),
    "float_power": ((0, 1), "pow"),
    "rpow": ((1, 0), "pow"),  # 2 ** x calls x.__rpow__(2)
}
# Python operators and their in-place forms, as torch names the methods behind them.
_OPERATORS = {
    "truediv": "div",
    "rtruediv": "rdiv",
    "floordiv": "floor_divide",
    "rfloordiv": "floor_divide",
    "itruediv": "div",
    "idiv": "div",
    "ifloordiv": "floor_divide",
    "ipow": "pow",
    "iadd": "add",
    "isub": "sub",
    "imul": "mul",
}
_REFLECTED = {"rdiv": "div", "rpow": "pow"}  # 1 / x and 2 ** x, named as the op they compute
_IN_PLACE_OPERATORS = {"itruediv", "idiv", "ifloordiv", "ipow", "iadd", "isub", "imul"}
# Namespaces of functions that are not torch.*: (module torch reports, the public name, prefix of the C name).
_NAMESPACES = (
    ("torch.nn.functional", "torch.nn.functional", ""),
    ("torch._C._nn", "torch.nn.functional", ""),
    ("torch._C._special", "torch.special", "special_"),
    ("torch._C._linalg", "torch.linalg", "linalg_"),
    ("torch._C._fft", "torch.fft", "fft_"),
)
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


@dataclass(frozen=True)
class _OpName:
    base: str  # "log", "div", "rdiv", "pow": the key of the tables above
    display: str  # "torch.log", "torch.div"
    in_place: bool

    @staticmethod
    def of(func: Callable) -> _OpName:
        name = getattr(func, "__name__", None) or type(func).__name__
        in_place = False
        if name.startswith("__") and name.endswith("__"):
            name = name.strip("_")
            in_place = name in _IN_PLACE_OPERATORS
            name = _OPERATORS.get(name, name)
        elif name.endswith("_") and not name.startswith("_"):
            name, in_place = name[:-1], True
        module = getattr(func, "__module__", None) or ""
        display = f"torch.{_REFLECTED.get(name, name)}"
        for reported, public, prefix in _NAMESPACES:
            if module == reported:
                display = f"{public}.{name.removeprefix(prefix)}"
        return _OpName(name, display, in_place)


@dataclass
class _Values:
    """What an operand held: a tensor's values summed up, or a Python number."""

    finite: bool
    low: float | None  # over the finite values; None when there are none
    high: float | None
    zero: bool  # holds an exact 0
    smallest: float | None  # the smallest |value| over the finite values
    dtype: str
    number: float | None = None  # the operand was this Python number

    @property
    def range(self) -> tuple[float, float] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)

    @staticmethod
    def of(value: Any) -> _Values | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            number = float(value)
            finite = math.isfinite(number)
            low = number if finite else None
            return _Values(finite, low, low, number == 0, abs(number) if finite else None, type(value).__name__, number)
        if not isinstance(value, torch.Tensor) or not _plain(value) or value.is_complex() or value.dtype is torch.bool:
            return None
        tensor = value.detach()
        dtype = str(tensor.dtype).removeprefix("torch.")
        if not tensor.is_floating_point():
            tensor = tensor.double()  # an integer divisor (a count) divides like a float one
        finite_mask = torch.isfinite(tensor)
        values = tensor[finite_mask]
        if not values.numel():
            return _Values(False, None, None, False, None, dtype)
        low, high, smallest = float(values.min()), float(values.max()), float(values.abs().min())
        return _Values(bool(finite_mask.all()), low, high, smallest == 0, smallest, dtype)


class _OpWatcher(TorchFunctionMode):
    """Sees every torch call made while it is entered (by the model's Python code or the loss), and keeps the
    few worth naming on the module call they ran in (``_Call.ops``) or, outside the forward pass, on
    ``loss_ops``: calls that made NaN/Inf from finite inputs, and calls whose slope is infinite at a finite
    output (sqrt, a fractional power, acos or asin at the edge of their domain) on inputs that need a gradient.
    Nested calls (the ops inside ``F.softmax``) run with the mode off: the op named is the one the code called.
    An op it cannot inspect (a sparse or other unusual tensor) is left unnamed; the model's call is never changed.
    """

    def __init__(self, watcher: _Watcher) -> None:
        super().__init__()
        self.watcher = watcher
        self.loss_ops: list[_SeenOp] = []

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        watcher = self.watcher
        if watcher.busy:
            return func(*args, **kwargs)
        call = watcher.current
        seen = call.ops if call is not None else self.loss_ops
        if len(seen) >= 2 * OPS_PER_CALL:
            return func(*args, **kwargs)
        name = _OpName.of(func)
        try:
            # An in-place op overwrites its input: what it took in is read before it runs.
            before = _inputs_finite(args, kwargs) if name.in_place else None
            operands = _operands(name, args, kwargs) if name.in_place else None
        except Exception:  # a diagnostic must not break the model's call: the op goes unnamed
            before, operands, name = None, None, None
        result = func(*args, **kwargs)
        if name is not None:
            try:
                found = _inspect(name, args, kwargs, result, before, operands)
            except Exception:  # as above
                found = None
            if found is not None:
                found.op.location, found.op.source = _caller()
                seen.append(found)
        return result


def _inspect(
    name: _OpName, args: tuple, kwargs: dict, result: Any, before: bool | None, operands: tuple | None
) -> _SeenOp | None:
    outputs = list(_floats(result))
    if not outputs or not all(_plain(output) for output in outputs):
        return None
    if all(bool(torch.isfinite(output.detach()).all()) for output in outputs):  # one host sync per output
        return _singular(name, args, kwargs)
    tally = _tally(outputs)
    inputs_finite = before if before is not None else _inputs_finite(args, kwargs)
    if not inputs_finite:
        return None
    operand, other = operands if operands is not None else _operands(name, args, kwargs)
    return _SeenOp(_made(name, operand, other, tally), tally.mask_like)


def _plain(tensor: torch.Tensor) -> bool:
    """A tensor that holds its values (a Parameter too). A wrapper subclass (DTensor) is left alone: reading its
    values may take a collective, which one process alone would wait on forever."""
    return type(tensor).__torch_dispatch__ is torch.Tensor.__torch_dispatch__


def _inputs_finite(args: tuple, kwargs: dict) -> bool:
    for value in _leaves((args, kwargs)):
        if isinstance(value, torch.Tensor):
            if not _plain(value):
                return False  # not read (see _plain): the op is not named
            if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value.detach()).all()):
                return False
        elif isinstance(value, float) and not math.isfinite(value):
            return False  # masked_fill(mask, -inf), torch.full(..., nan): put there on purpose
    return True


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, (tuple, list)):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    else:
        yield value


def _operands(name: _OpName, args: tuple, kwargs: dict) -> tuple[_Values | None, _Values | None]:
    """(the operand that can leave its domain, the other one) of an op with a domain; else (its first
    tensor input, None)."""
    positional = list(args) + [v for k, v in kwargs.items() if k in ("input", "self", "other", "exponent")]
    if name.base in _BINARY_DOMAINS:
        (first, second), _ = _BINARY_DOMAINS[name.base]
        picked = [positional[i] if i < len(positional) else None for i in (first, second)]
        return _Values.of(picked[0]), _Values.of(picked[1])
    if name.base in _UNARY_DOMAINS and positional:
        return _Values.of(positional[0]), None
    first = next((v for v in _leaves((args, kwargs)) if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
    return _Values.of(first), None


def _made(name: _OpName, operand: _Values | None, other: _Values | None, tally: _Tally) -> NonfiniteOp:
    """An op that made NaN/Inf from finite inputs: which domain it left, and by how much."""
    base = name.base
    domain = _UNARY_DOMAINS.get(base) or (_BINARY_DOMAINS[base][1] if base in _BINARY_DOMAINS else None)
    low, high = (operand.low, operand.high) if operand is not None else (None, None)
    detail = None
    exponent = None
    if domain is not None and operand is not None and low is not None and high is not None:
        shown = name.display
        if domain in ("log", "sqrt", "rsqrt"):
            detail = f"{shown} of values down to {low:.3g}" if low < 0 else f"{shown} of 0"
        elif domain == "log1p":
            detail = f"{shown} of values down to {low:.3g}"
        elif domain == "division" and (operand.zero or (operand.smallest or 0.0) < TINY_DIVISOR):
            smallest = "0" if operand.zero else f"values as small as {operand.smallest:.3g}"
            detail = f"division by {smallest} (divisor in [{low:.3g}, {high:.3g}])"
        elif domain == "pow":
            exponent = other.number if other is not None else None
            power = f"the power {exponent:g}" if exponent is not None else "a tensor of powers"
            if low < 0 and (exponent is None or exponent != int(exponent)):
                detail = f"{shown} of values down to {low:.3g} to {power}"
            elif operand.zero and (exponent is None or exponent < 0):
                detail = f"{shown} of 0 to {power}"
            else:
                domain = None  # an overflow: no domain it left
        elif domain in ("acos", "asin", "atanh"):
            edge = "[-1, 1]" if domain != "atanh" else "(-1, 1)"
            detail = f"{shown} of values in [{low:.3g}, {high:.3g}] (outside {edge})"
        elif domain == "exp":
            limit = _exp_limit(operand.dtype)
            detail = f"{shown} of values up to {high:.3g} ({operand.dtype} overflows above {limit:.3g})"
    if detail is None:
        domain = None
        ranges = f" in [{low:.3g}, {high:.3g}]" if low is not None and high is not None else ""
        made = "gave NaN" if tally.nan else "overflowed"
        detail = f"{name.display}, which {made} on finite values{ranges}"
    return NonfiniteOp(
        name.display,
        domain,
        detail,
        operand.range if operand is not None else None,
        operand.dtype if operand is not None else "",
        exponent=exponent,
    )


def _exp_limit(dtype: str) -> float:
    """The largest x whose exp is finite in ``dtype`` (88.7 in float32); a Python float's for a number."""
    floating = getattr(torch, dtype, None)
    if not isinstance(floating, torch.dtype) or not floating.is_floating_point:
        floating = torch.float64
    return math.log(torch.finfo(floating).max)


# Ops whose output is finite where their slope is infinite: sqrt and fractional powers below 1 at 0, acos and
# asin at -1 and 1. The backward pass divides by 0 there (sqrt: grad / (2 * sqrt(x))) and makes Inf, or NaN.
_SINGULAR = {"sqrt", "pow", "float_power", "acos", "arccos", "asin", "arcsin"}


def _singular(name: _OpName, args: tuple, kwargs: dict) -> _SeenOp | None:
    if name.base not in _SINGULAR:
        return None
    positional = list(args) + [v for k, v in kwargs.items() if k in ("input", "self", "exponent")]
    tensor = positional[0] if positional else None
    if not isinstance(tensor, torch.Tensor) or not tensor.requires_grad or not tensor.is_floating_point():
        return None  # no gradient goes through it
    if not _plain(tensor):
        return None
    values = tensor.detach()
    exponent = None
    if name.base in ("pow", "float_power"):
        exponent = positional[1] if len(positional) > 1 else None
        if not isinstance(exponent, (int, float)) or not 0 < exponent < 1:
            return None
        at = "0"
        singular = bool((values == 0).any())
    elif name.base == "sqrt":
        at, singular = "0", bool((values == 0).any())
    else:
        at, singular = "-1 or 1", bool((values.abs() == 1).any())
    if not singular:
        return None
    domain = _UNARY_DOMAINS.get(name.base, "pow")
    power = f" to the power {exponent:g}" if exponent is not None else ""
    operand = _Values.of(tensor)
    detail = f"the gradient of {name.display} at {at}{power} (its slope is infinite there)"
    op = NonfiniteOp(name.display, domain, detail, operand.range, operand.dtype, True, exponent)
    return _SeenOp(op, False)


def _made_op(seen: list[_SeenOp]) -> NonfiniteOp | None:
    """The op that made the forward pass's (or the loss's) NaN/Inf: the first that made NaN or +Inf, else the
    first that made -Inf (a log of 0; a -Inf mask made on purpose is passed over when something else made NaN)."""
    made = [s for s in seen if not s.op.singular]
    chosen = next((s for s in made if not s.mask_like), None) or next(iter(made), None)
    return chosen.op if chosen is not None else None


def _backward_op(seen: list[_SeenOp]) -> NonfiniteOp | None:
    """The op behind a NaN/Inf the backward pass made: one whose NaN the forward pass hid (torch.where picks
    the finite branch, but the gradient of the other still flows back: 0 * NaN is NaN), else one with an
    infinite slope at its input."""
    hidden = next((s.op for s in seen if not s.op.singular and not s.mask_like), None)
    return hidden or next((s.op for s in seen if s.op.singular), None) or _made_op(seen)


def _caller() -> tuple[str | None, str | None]:
    """("file.py:14", the call as written) of the code that called the op: the first frame outside torch and
    this module. None, None when that is gradcheck's own code (its built-in losses)."""
    frame = inspect.currentframe()
    try:
        while frame is not None and frame.f_code.co_filename.startswith((_TORCH_DIR, __file__)):
            frame = frame.f_back
        if frame is None or frame.f_code.co_filename.startswith(_OWN_DIR):
            return None, None
        filename, lineno = frame.f_code.co_filename, frame.f_lineno
        return f"{_shown_path(filename)}:{lineno}", _call_source(filename, lineno, _positions(frame))
    finally:
        del frame  # a frame holds the model's locals, the graph among them


def _positions(frame: Any) -> tuple[int | None, int | None, int | None, int | None]:
    """(line, end line, column, end column) of the instruction the frame is running: the call into torch
    (PEP 657, Python 3.11+; Nones before). Columns count UTF-8 bytes."""
    positions = getattr(frame.f_code, "co_positions", None)
    if positions is None or frame.f_lasti < 0:
        return None, None, None, None
    # One entry per 2-byte code unit, as f_lasti counts bytes.
    return next(itertools.islice(positions(), frame.f_lasti // 2, None), (None, None, None, None))


def _call_source(filename: str, lineno: int, positions: tuple[int | None, ...]) -> str | None:
    """The expression that called the op, as written; the whole line where positions are not known."""
    lines = linecache.getlines(filename)
    if not lines or not lineno or lineno > len(lines):
        return None
    start, end, column, end_column = positions
    if start != lineno or end is None or column is None or end_column is None or end > len(lines):
        return lines[lineno - 1].strip() or None
    chunk = [line.encode() for line in lines[start - 1 : end]]
    chunk[-1] = chunk[-1][:end_column]
    chunk[0] = chunk[0][column:]
    return b"".join(chunk).decode(errors="replace").strip() or None


def _shown_path(filename: str) -> str:
    """Relative to the working folder when inside it, as the user would type it; else as it is."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        return filename
    return filename if relative.startswith(os.pardir) else relative
