"""The monitor: gradient health inside a real training loop, for the cost of one fused norm per step.

    monitor = Monitor(model, every=100)
    for inputs, targets in loader:
        loss = loss_fn(model(inputs), targets)
        loss.backward()
        monitor.step(loss)  # after backward; before clipping, optimizer.step() and zero_grad()
        optimizer.step()
        optimizer.zero_grad()
    monitor.detach()

Every step, the norm of each trainable parameter's gradient (``torch._foreach_norm``: one fused kernel on
CUDA) is written into one row of a ring buffer on the device, and the loss tensor is copied beside it
(every few steps instead where those norms cost more than schedule.AUTO_NORM_SHARE of the step: ``norms_every``;
the steps between then take the norms of the small parameters only, the watch).
Nothing reaches the host, so the step never waits for the device. Every ``every`` steps (the sampled steps:
the first, then every ``every``-th) the rows since the previous sample, this step's weight norms and, with
``signals``, each layer's output-gradient and activation norms reach the host in one transfer. Then:

- the rules over time (training_judge.TrainingJudge) read every step since the previous sample, so a NaN or a
  jump is named at the step it happened, not at the sample that saw it, and at the layer nearest the loss;
- the scan's own diagnosis judges the sampled step, with the same thresholds as ``gradcheck scan``.

The output-gradient and activation figures need module hooks; they are registered after the step before
a sampled one and removed when it is read, so the other steps run no hook at all. The model is never
changed: no mode, weight, gradient or buffer is written, and ``detach()`` (or leaving the ``with`` block)
removes any hook left.

This module is the Monitor's public surface and the flow of a step; the rest of the folder does the work:
options (the arguments checked), schedule (which steps are sampled and take norms), layers (the layers and
the parameters tracked), ring (the per-step norms on the device), signals (the sampled step's module hooks),
readout and records (a read-out judged and kept), training_judge (the rules over time), history_log (the
history file) and history (the records and the file's format, torch-free for ``gradcheck report``).
"""

from __future__ import annotations

import os
import warnings
from time import perf_counter
from typing import Any

import torch
from torch import nn

from gradcheck_cli.common.errors import InvalidOptionError
from gradcheck_cli.measure.graph import describe_structure, has_skip_connections
from gradcheck_cli.measure.layer_figures import WeightPlan, parameter_layers
from gradcheck_cli.measure.torch_compat import eager_model, release_nodes, release_with_graph
from gradcheck_cli.monitor.history import (
    DEFAULT_GROW_FACTOR,
    DEFAULT_REFERENCE_STEPS,
    DEFAULT_SHRINK_FACTOR,
    HistoryHeader,
    Problem,
    Rules,
    StepRecord,
)
from gradcheck_cli.monitor.history_log import HistoryLog, write_history
from gradcheck_cli.monitor.layers import LayerPlan
from gradcheck_cli.monitor.options import OnProblem, ProblemHandler, checked_thresholds, problem_handler, whole_number
from gradcheck_cli.monitor.readout import ReadOut
from gradcheck_cli.monitor.ring import NormRing
from gradcheck_cli.monitor.schedule import NormSchedule
from gradcheck_cli.monitor.signals import SignalHooks


class GradientProblemWarning(UserWarning):
    """A gradient problem found by the monitor (``on_problem="warn"``)."""


class GradientProblemError(Exception):
    """A gradient problem found by the monitor (``on_problem="raise"``): ``problem`` is the earliest of
    ``problems``, those found at the same read-out."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        self.problem = self.problems[0]
        more = f" (and {len(problems) - 1} more: see .problems)" if len(problems) > 1 else ""
        super().__init__(f"gradcheck: {self.problem.message}{more}")

    @property
    def step(self) -> int:
        return self.problem.step

    @property
    def layer(self) -> str | None:
        return self.problem.layer

    @property
    def kind(self) -> str:
        return self.problem.kind

    @property
    def figures(self) -> dict[str, Any]:
        return self.problem.figures


class Monitor:
    """Watch a model's gradients while it trains: call ``step()`` after every ``loss.backward()``.

    ``every``: steps between sampled steps (the first step is sampled too). ``norms_every``: take the
    per-step gradient norms every this many steps (1: every step, so a problem is named at its own step;
    n: every n-th step, with the watch, the norms of the biases and norm scales, on the steps between, so a
    problem they show is still named at its own step; "auto": every step while that costs at most 1% of the
    training step, else every 2nd, 4th or 8th with the watch between while it fits too, chosen from the
    monitor's own timings and chosen again at each sampled step). ``on_problem``: "warn",
    "raise", "record", or a function called with each ``Problem``. ``history``: sampled records kept in
    ``monitor.history``. ``log``: a JSON-lines file written as the run goes (``gradcheck report`` reads it).
    ``thresholds``: the scan's ``Thresholds``. ``grow_factor`` / ``shrink_factor`` / ``reference_steps``:
    the rule over time (a layer's gradient norm against its median over its first steps). ``signals``:
    also measure each layer's output gradient and activations on sampled steps (module hooks on those
    steps only; turn off for models that must not see a hook, e.g. under torch.compile). ``start_step``:
    the number of the first step (a resumed run passes its own). ``note``: a line saved in the history.
    """

    def __init__(
        self,
        model: nn.Module,
        every: int = 100,
        *,
        norms_every: int | str = "auto",
        on_problem: OnProblem | str | ProblemHandler = OnProblem.WARN,
        history: int = 100,
        log: str | os.PathLike | None = None,
        thresholds: Any = None,
        grow_factor: float = DEFAULT_GROW_FACTOR,
        shrink_factor: float = DEFAULT_SHRINK_FACTOR,
        reference_steps: int = DEFAULT_REFERENCE_STEPS,
        signals: bool = True,
        start_step: int = 1,
        name: str | None = None,
        note: str = "",
    ):
        thresholds = checked_thresholds(thresholds)
        if not isinstance(model, nn.Module):
            raise InvalidOptionError(f"Monitor watches an nn.Module (got {type(model).__name__}); pass the model.")
        self.every = whole_number(every, "every", 1)
        self.norms_every: int | str = "auto" if norms_every == "auto" else whole_number(norms_every, "norms_every", 1)
        keep = whole_number(history, "history", 1)
        self._on_problem = problem_handler(on_problem)
        self._model = model
        # A torch.compile'd model's layers are its original module's, named as in the uncompiled model (no
        # "_orig_mod.", issue 23); its training steps still run the compiled code, whose gradients are read.
        with eager_model(model) as eager:
            defined = parameter_layers(eager.model.named_modules())  # in definition order
            structure, model_class = describe_structure(eager.model), type(eager.model).__name__
        # The weight figures are measured over the layers in definition order, as the scan measures them, and
        # reported in the layers' order (LayerPlan).
        self._weight_plan = WeightPlan(defined)
        self._plan = LayerPlan(defined, self._weight_plan.fan_in, [])
        if not self._plan.tracked:
            raise InvalidOptionError("The model has no trainable parameters, so there is no gradient to monitor.")
        # The layers' order is settled at the first step, from the forward pass its hooks saw (_settle_layers).
        self._layers_settled = False
        self._signals = bool(signals) and not isinstance(model, torch.jit.ScriptModule)  # TorchScript: no hooks
        first = next(model.parameters())
        self.header = HistoryHeader(
            model=name or model_class,
            layers=self._plan.infos,
            every=self.every,
            start_step=whole_number(start_step, "start_step", 0),
            signals=self._signals,
            thresholds=thresholds,
            rules=Rules(grow_factor, shrink_factor, reference_steps),
            structure=structure,
            param_count=sum(p.numel() for p in model.parameters()),
            trainable_param_count=sum(p.numel() for p in model.parameters() if p.requires_grad),
            dtype=str(first.dtype).replace("torch.", ""),
            device=str(first.device),
            note=note,
        )
        self.problems: list[Problem] = []
        self._next_step = self.header.start_step
        self._schedule = NormSchedule(self.every, self.norms_every, self.header.start_step, self._plan.watch_width > 0)
        self._ring = NormRing(self._schedule.ring_rows(), self._plan.params)
        self._readout = ReadOut(self.header, self._plan, self._weight_plan, self._ring, keep, model)
        self._skips_read = False
        self._hooks: SignalHooks | None = None
        # Autograd nodes read from a step's graph (the skip walk's, the hooked outputs'): see _hand_over_nodes.
        self._graph_nodes: list[Any] = []
        self._log = HistoryLog(log, self.header) if log is not None else None
        self._attached = True
        if self._signals and self._schedule.sampled(self._next_step):
            self._arm()

    # ------------------------------------------------------------------------------ public

    @property
    def history(self) -> list[StepRecord]:
        """The last ``history`` records, oldest first."""
        return list(self._readout.records)

    @property
    def last_step(self) -> int | None:
        """The number of the last step seen; None before the first."""
        return self._next_step - 1 if self._next_step > self.header.start_step else None

    @property
    def attached(self) -> bool:
        return self._attached

    def step(self, loss: torch.Tensor | float | None = None) -> list[Problem]:
        """Record this step's gradients (call it after ``loss.backward()``, before the optimizer step and
        before clipping). On a sampled step, read and judge every step since the previous sample; returns
        the problems found (and warns or raises as ``on_problem`` says)."""
        self._check_attached()
        entered = perf_counter()
        if not self._layers_settled:
            self._settle_layers()
        release_nodes(self._graph_nodes)  # of an earlier step given no loss: its graph is gone by now
        schedule = self._schedule
        schedule.entered(entered)
        step = self._next_step
        self._next_step += 1
        sampled = schedule.sampled(step)
        full = schedule.takes_norms(step, sampled)
        found: list[Problem] = []
        if full or schedule.watching:
            if self._ring.is_full:
                found = self._drain()
            params = self._plan.params if full else self._plan.params[: self._plan.watch_width]
            self._ring.add(step, full, params, loss)
            self._read_skips(loss)
        if full:
            schedule.norms_taken(step)
        if schedule.timed(full, sampled):
            schedule.add_cost(full, perf_counter() - entered)
        if sampled:
            found += self._read(step, sampled=True)
            schedule.sample_read()
        if self._signals and schedule.sampled(step + 1) and not (found and self._on_problem is OnProblem.RAISE):
            self._arm()
        self._hand_over_nodes(loss)
        schedule.left(perf_counter())
        self._emit(found, stacklevel=3)
        return found

    @property
    def norms_stride(self) -> int:
        """Steps between two steps whose per-layer norms are taken, now (``norms_every``, or its choice)."""
        return self._schedule.stride

    def check(self) -> list[Problem]:
        """Read and judge the steps since the last read-out now, without waiting for a sampled step (one
        host transfer). The record has no output-gradient or activation figures."""
        self._check_attached()
        found = self._read_unread()
        self._emit(found, stacklevel=3)
        return found

    def detach(self) -> list[Problem]:
        """Stop watching: judge the steps not yet read (one last record) and remove every hook. Idempotent.
        (The log is appended to line by line; no file stays open.)"""
        return self._finish(raise_allowed=True, stacklevel=4)

    def write_history(self, path: str | os.PathLike) -> None:
        """Write the header and the records kept in ``monitor.history`` as JSON lines (whole, or not at all)."""
        write_history(path, self.header, self.history)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        # With an exception already on its way out, a problem found here is kept, never raised over it.
        self._finish(raise_allowed=exc_type is None, stacklevel=4)

    # ------------------------------------------------------------------------------ every step

    def _read_skips(self, loss: Any) -> None:
        """Skip connections are read off the autograd graph once, as a scan does: the diagnosis holds slow growth
        over residual blocks to a warning."""
        if self._skips_read or not isinstance(loss, torch.Tensor) or loss.grad_fn is None:
            return
        self._skips_read = True
        if self.header.structure.residual is None and not isinstance(self._model, torch.jit.ScriptModule):
            self.header.structure.residual = has_skip_connections(loss, self._graph_nodes)

    def _arm(self) -> None:
        if self._hooks is None:
            self._hooks = SignalHooks(self._plan.layers, self._model)

    def _disarm(self) -> None:
        self._hooks.remove()
        self._graph_nodes += self._hooks.take_nodes()
        self._hooks = None

    def _settle_layers(self) -> None:
        """At the first step: the layers in the order its forward pass ran them, where the signal hooks saw that
        pass (a Monitor made before it, with ``signals``), so that a tied parameter belongs to the layer that runs
        first, as in a scan (issue 24: the monitor gave it to the layer defined first). Without that pass the
        layers stay in definition order for the whole run."""
        self._layers_settled = True
        hooks = self._hooks
        if hooks is None or not hooks.order:
            return
        plan = self._plan.in_order_run([hooks.layers[index][1] for index in hooks.order])
        if plan is None:
            return
        self._plan = plan
        self._readout.relist(plan)

    # ------------------------------------------------------------------------------ read-outs

    def _drain(self) -> list[Problem]:
        """The ring is full before a sampled step (``every`` above its rows): judge its steps now (ReadOut.drain).
        The one case of a read-out between samples."""
        problems = self._readout.drain()
        self.problems += problems
        return problems

    def _read(self, step: int, sampled: bool) -> list[Problem]:
        """Read out the steps since the previous record with this step's figures, judge them, keep a record."""
        hooks = self._hooks if sampled else None
        problems, record = self._readout.read(step, sampled, hooks)
        self.problems += problems
        if hooks is not None:
            self._disarm()
        if self._log is not None:
            self._log.append(record)
        return problems

    def _read_unread(self) -> list[Problem]:
        """check() and detach(): the rows not yet read, judged, with a record of the last step whose norms were
        all taken (the watch's steps after it are judged with it)."""
        step = self._ring.last_full_step()
        if step is None:
            return self._drain() if self._ring.unread else []
        return self._read(step, sampled=False)

    # ------------------------------------------------------------------------------ endings and output

    def _finish(self, raise_allowed: bool, stacklevel: int) -> list[Problem]:
        if not self._attached:
            return []
        try:
            found = self._read_unread()
        finally:
            if self._hooks is not None:
                self._disarm()
            release_nodes(self._graph_nodes)
            self._attached = False
            self._ring.release()
        if raise_allowed or self._on_problem is not OnProblem.RAISE:
            self._emit(found, stacklevel)
        return found

    def _emit(self, problems: list[Problem], stacklevel: int) -> None:
        if not problems:
            return
        handler = self._on_problem
        if handler is OnProblem.RAISE:
            raise GradientProblemError(problems)
        if handler is OnProblem.WARN:
            for problem in problems:
                warnings.warn(f"gradcheck: {problem.message}", GradientProblemWarning, stacklevel=stacklevel)
        elif callable(handler):
            for problem in problems:
                handler(problem)

    def _hand_over_nodes(self, loss: Any) -> None:
        """The nodes this step read from its graph, which is the user's: torch frees a graph whose nodes Python has
        read by recursion, which overflows the C stack on a deep model (probe.release_nodes). Handed to the graph
        behind ``loss``, they are let go in order when the user drops it; without a loss, at the next step."""
        if self._graph_nodes and isinstance(loss, torch.Tensor) and loss.grad_fn is not None:
            release_with_graph(loss, self._graph_nodes)
            self._graph_nodes = []

    def _check_attached(self) -> None:
        if not self._attached:
            raise InvalidOptionError("This Monitor was detached; create a new Monitor to watch the model again.")
