"""The hooks of the watched pass: what each module call took in and gave out, and the gradients in firing order."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from gradcheck_cli.measure.nonfinite.tally import Tally, finite_ranges, float_tensors, tally_of

if TYPE_CHECKING:  # the ops seen inside a call are kept on it: their type for annotations only
    from gradcheck_cli.measure.nonfinite.op_domains import SeenOp


@dataclass(eq=False)
class ModuleCall:
    """One call of one module in the watched forward pass."""

    name: str
    type: str
    module_id: int
    parent: ModuleCall | None  # the watched call this one ran inside
    order: int  # when it was called (its parent comes first; forward hooks fire the other way round)
    inputs: Tally  # over its floating-point inputs, masks left out
    masked: int  # -inf values in inputs read as attention masks
    input_ranges: list[tuple[float, float]]
    output: Tally = field(default_factory=Tally)
    ops: list[SeenOp] = field(default_factory=list)  # ops of its own code (not its children's) worth naming

    def ancestors(self) -> set[str]:
        names, call = set(), self.parent
        while call is not None:
            names.add(call.name)
            call = call.parent
        return names


@dataclass
class GradEvent:
    kind: str  # "output" (the gradient arriving at a module's output), "input" or "parameter"
    call: ModuleCall
    what: str  # for the detail: "its input", "its parameter weight"
    tally: Tally
    group: int  # hooks on one tensor fire one after another with the same gradient object: one group


class Watcher:
    """Hook bodies: count what each module took in and gave out, and the gradients in firing order."""

    def __init__(self, names: dict[int, str], hooks: ExitStack, nodes: list[Any]) -> None:
        self.names = names
        self.hooks = hooks  # tensor hooks made during forward are removed with the module hooks
        self.nodes = nodes  # the nodes of hooked tensors: see trace_nonfinite
        self.watching = True
        self.calls: list[ModuleCall] = []  # in the order their forward hooks fired: children before parents
        self.events: list[GradEvent] = []
        self._active: list[ModuleCall] = []
        self._first_call: dict[int, ModuleCall] = {}
        self._started = 0
        self._last_grad: torch.Tensor | None = None
        self.busy = False  # in a hook body: the torch calls there are gradcheck's, not the model's

    @property
    def current(self) -> ModuleCall | None:
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
        inputs = list(float_tensors((args, kwargs)))
        tallies = [tally_of([tensor]) for tensor in inputs]
        # A transformer's -inf mask is no NaN coming in: left out, or every attention would look passed-on.
        tally = sum((t for t in tallies if not t.mask_like), Tally())
        masked = sum(t.neg_inf for t in tallies if t.mask_like)
        parent = self._active[-1] if self._active else None
        call = ModuleCall(
            self.names[id(module)],
            type(module).__name__,
            id(module),
            parent,
            self._started,
            tally,
            masked,
            finite_ranges(inputs) if tally.finite else [],
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
        outputs = list(float_tensors(output))
        call.output = tally_of(outputs)
        self.calls.append(call)
        self._watch(outputs, "output", call, "its output")

    def parameter_grad(self, module: nn.Module, param_name: str, grad: torch.Tensor) -> None:
        call = self._first_call.get(id(module))
        if call is not None:  # a module never called: its weights were used by its parent's own code
            self._record("parameter", call, f"its parameter {param_name}", grad)

    def _watch(self, tensors: list[torch.Tensor], kind: str, call: ModuleCall, what: str) -> None:
        for tensor in tensors:
            if tensor.requires_grad:
                self.hooks.callback(tensor.register_hook(partial(self._record, kind, call, what)).remove)
                if tensor.grad_fn is not None:
                    self.nodes.append(tensor.grad_fn)

    def _record(self, kind: str, call: ModuleCall, what: str, grad: torch.Tensor | None) -> None:
        if grad is None:
            return
        group = self.events[-1].group if self.events else 0
        if grad is not self._last_grad:
            group += 1
        self._last_grad = grad
        self.events.append(GradEvent(kind, call, what, tally_of([grad]), group))
