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
(every few steps instead where those norms cost more than AUTO_NORM_SHARE of the step: ``norms_every``;
the steps between then take the norms of the small parameters only, the watch).
Nothing reaches the host, so the step never waits for the device. Every ``every`` steps (the sampled steps:
the first, then every ``every``-th) the rows since the previous sample, this step's weight norms and, with
``signals``, each layer's output-gradient and activation norms reach the host in one transfer. Then:

- the rules over time (history.TrainingJudge) read every step since the previous sample, so a NaN or a
  jump is named at the step it happened, not at the sample that saw it, and at the layer nearest the loss;
- the scan's own diagnosis judges the sampled step, with the same thresholds as ``gradcheck scan``.

The output-gradient and activation figures need module hooks; they are registered after the step before
a sampled one and removed when it is read, so the other steps run no hook at all. The model is never
changed: no mode, weight, gradient or buffer is written, and ``detach()`` (or leaving the ``with`` block)
removes any hook left.
"""

from __future__ import annotations

import math
import os
import statistics
import warnings
from collections import deque
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from time import perf_counter
from typing import Any

import torch
from torch import nn

from gradcheck_cli.common.errors import GradcheckError, InvalidOptionError
from gradcheck_cli.common.files import write_whole
from gradcheck_cli.common.stats import LayerStats
from gradcheck_cli.measure.layer_figures import (
    WeightPlan,
    exact_norms,
    gradient_figures,
    gradient_squares,
    held_parameters,
    layer_type,
    owned_parameters,
    parameter_layers,
    ranked,
    shown_name,
)
from gradcheck_cli.measure.probe import describe_structure, has_skip_connections, tensors_in
from gradcheck_cli.measure.torch_compat import eager_model, release_nodes, release_with_graph
from gradcheck_cli.monitor.history import (
    DEFAULT_GROW_FACTOR,
    DEFAULT_REFERENCE_STEPS,
    DEFAULT_SHRINK_FACTOR,
    HistoryHeader,
    LayerInfo,
    Problem,
    Rules,
    StepRecord,
    TrainingJudge,
    diagnose_record,
    header_document,
    history_text,
    json_line,
    record_document,
)

# norms_every="auto": the per-step norms are taken on every step while ``step()`` costs at most this share
# of the training step around it (timed on the host, over the last AUTO_WINDOW steps that took them), and
# on every 2nd, 4th or 8th step where it costs more (a small model on a CPU), with the watch (the small
# parameters' norms) on the steps between while it fits in the same share. With the sampled steps' share (a
# few ms every ``every`` steps) the monitor stays under 2% of the step.
AUTO_NORM_SHARE = 0.01
AUTO_MAX_STRIDE = 8
AUTO_WINDOW = 16
# Device memory for the ring of per-step norms: 16 MB holds 100 steps of 20,000 parameter tensors.
RING_BUDGET_BYTES = 16 * 2**20


class OnProblem(str, Enum):
    """What the monitor does when it finds a problem (it is always kept in ``monitor.problems``)."""

    WARN = "warn"  # warnings.warn(GradientProblemWarning) with the problem's one-line message
    RAISE = "raise"  # raise GradientProblemError from the step() that found it
    RECORD = "record"  # nothing more: read monitor.problems or the history


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


ProblemHandler = Callable[[Problem], None]


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
        from gradcheck_cli.judge.diagnosis import Thresholds

        if thresholds is not None and not isinstance(thresholds, Thresholds):
            raise InvalidOptionError(
                f"thresholds must be a gradcheck_cli.Thresholds (got {type(thresholds).__name__}); "
                "e.g. Thresholds(decades_error=3)."
            )
        if not isinstance(model, nn.Module):
            raise InvalidOptionError(f"Monitor watches an nn.Module (got {type(model).__name__}); pass the model.")
        self.every = _whole(every, "every", 1)
        self.norms_every: int | str = "auto" if norms_every == "auto" else _whole(norms_every, "norms_every", 1)
        keep = _whole(history, "history", 1)
        self._on_problem = _on_problem(on_problem)
        self._model = model
        # A torch.compile'd model's layers are its original module's, named as in the uncompiled model (no
        # "_orig_mod.", issue 23); its training steps still run the compiled code, whose gradients are read.
        with eager_model(model) as eager:
            self._defined = parameter_layers(eager.model.named_modules())  # in definition order
            structure, model_class = describe_structure(eager.model), type(eager.model).__name__
        # The weight figures are measured over the layers in definition order, as the scan measures them, and
        # reported in the layers' order (_plan_layers).
        self._weight_plan = WeightPlan(self._defined)
        infos, watched = self._plan_layers([])
        if not self._tracked:
            raise InvalidOptionError("The model has no trainable parameters, so there is no gradient to monitor.")
        # The layers' order is settled at the first step, from the forward pass its hooks saw (_settle_layers).
        self._layers_settled = False
        self._signals = bool(signals) and not isinstance(model, torch.jit.ScriptModule)  # TorchScript: no hooks
        first = next(model.parameters())
        dtypes = {p.dtype for _, _, p in self._tracked}
        # Half-precision norms overflow at 65504: low-precision gradients are normed in float32.
        self._norm_dtype = torch.float64 if torch.float64 in dtypes else torch.float32
        self._norm_dtype_arg = None if dtypes == {self._norm_dtype} else self._norm_dtype
        self.header = HistoryHeader(
            model=name or model_class,
            layers=infos,
            every=self.every,
            start_step=_whole(start_step, "start_step", 0),
            signals=self._signals,
            thresholds=thresholds if thresholds is not None else Thresholds(),
            rules=Rules(grow_factor, shrink_factor, reference_steps),
            structure=structure,
            param_count=sum(p.numel() for p in model.parameters()),
            trainable_param_count=sum(p.numel() for p in model.parameters() if p.requires_grad),
            dtype=str(first.dtype).replace("torch.", ""),
            device=str(first.device),
            note=note,
        )
        self._judge = TrainingJudge(self.header.layers, self.header.rules, watched)
        self._spread = len({param.device for param in self._params}) > 1
        self._history: deque[StepRecord] = deque(maxlen=keep)
        self.problems: list[Problem] = []
        self._next_step = self.header.start_step
        # Steps whose norms are taken: every ``_stride``-th from the last that took them (sampled steps too).
        self._auto = self.norms_every == "auto"
        self._stride = 1 if self._auto else self.norms_every
        self._next_norms_step = self.header.start_step
        # norms_every="auto": step()'s own time on the steps that took norms, and the time between calls.
        self._costs: deque[float] = deque(maxlen=AUTO_WINDOW)
        self._watch_costs: deque[float] = deque(maxlen=AUTO_WINDOW)  # and on the steps that took the watch's
        self._intervals: deque[float] = deque(maxlen=AUTO_WINDOW)
        # The watch is read on the steps between full norms: always with a norms_every above 1, and with "auto"
        # while it fits (see _choose_stride).
        self._watching = self._watch_width > 0 and self._stride > 1
        self._left_at: float | None = None
        self._stride_chosen = False
        self._skips_read = False
        # The ring buffer: one row of per-parameter gradient norms per step read since the last read-out.
        self._norms: torch.Tensor | None = None
        self._losses: torch.Tensor | None = None
        self._unread = 0
        # Rows of the ring: a step each until the next sample, within a memory budget; past it (a very large
        # ``every``), the full ring is read out and judged between samples.
        rows = self.every if self._auto or self._watch_width else -(-self.every // self._stride)
        self._capacity = max(1, min(rows, RING_BUDGET_BYTES // (8 * len(self._tracked))))
        self._missing: list[list[int] | None] = [None] * self._capacity  # per row: parameters without a gradient
        self._loss_given: list[Any] = [None] * self._capacity  # per row: None, "tensor", or the loss as a float
        self._carried_max, self._carried_problems, self._carried_rows = None, [], 0
        self._row_steps: list[int] = [0] * self._capacity  # per row: its step
        self._full: list[bool] = [True] * self._capacity  # per row: every norm taken (else the watch's only)
        self._last_record_step = self.header.start_step - 1
        self._hooks: _SignalHooks | None = None
        # Autograd nodes read from a step's graph (the skip walk's, the hooked outputs'): see _hand_over_nodes.
        self._graph_nodes: list[Any] = []
        self._log = Path(log) if log is not None else None
        self._log_started = False
        if self._log is not None:
            self._write_log("")  # fail now, not a hundred steps into the run, if the file cannot be written
        self._attached = True
        if self._signals and self._sampled(self._next_step):
            self._arm()

    # ------------------------------------------------------------------------------ public

    @property
    def history(self) -> list[StepRecord]:
        """The last ``history`` records, oldest first."""
        return list(self._history)

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
        if self._left_at is not None:
            self._intervals.append(entered - self._left_at)
        step = self._next_step
        self._next_step += 1
        sampled = self._sampled(step)
        full = sampled or step >= self._next_norms_step
        found: list[Problem] = []
        if full or self._watching:
            if self._unread == self._capacity:
                found = self._drain()
            slot = self._unread
            self._row_steps[slot] = step
            self._full[slot] = full
            self._record_norms(slot, len(self._params) if full else self._watch_width)
            self._record_loss(slot, loss)
            self._unread += 1
        if full:
            self._next_norms_step = step + self._stride
            if self._auto and not sampled:
                self._costs.append(perf_counter() - entered)
                if not self._stride_chosen and len(self._costs) == AUTO_WINDOW:
                    self._choose_stride()
        elif self._auto and self._watching:
            self._watch_costs.append(perf_counter() - entered)
        if sampled:
            found += self._read(step, sampled=True)
            if self._auto and self._costs:
                self._choose_stride()
        if self._signals and self._sampled(step + 1) and not (found and self._on_problem is OnProblem.RAISE):
            self._arm()
        self._hand_over_nodes(loss)
        self._left_at = perf_counter()
        self._emit(found, stacklevel=3)
        return found

    @property
    def norms_stride(self) -> int:
        """Steps between two steps whose per-layer norms are taken, now (``norms_every``, or its choice)."""
        return self._stride

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
        try:
            write_whole(Path(path), history_text(self.header, self.history))
        except OSError as error:
            raise GradcheckError(f"Cannot write the history to {path}: {error.strerror or error}.") from error

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        # With an exception already on its way out, a problem found here is kept, never raised over it.
        self._finish(raise_allowed=exc_type is None, stacklevel=4)

    # ------------------------------------------------------------------------------ every step

    def _record_norms(self, slot: int, width: int) -> None:
        """The norms of the first ``width`` tracked gradients (all, or the watch) into row ``slot``."""
        grads = [p.grad for p in (self._params if width == len(self._params) else self._params[:width])]
        missing = None
        if any(g is None for g in grads):
            missing = [i for i, g in enumerate(grads) if g is None]
            if len(missing) == len(grads):
                self._missing[slot] = missing
                if self._norms is not None:
                    self._norms[slot].zero_()
                return
            empty = next(g for g in grads if g is not None).new_empty(0)
            grads = [empty if g is None else g for g in grads]
        self._missing[slot] = missing
        if self._norms is None:
            self._norms = torch.empty(self._capacity, len(self._params), dtype=self._norm_dtype, device=grads[0].device)
        if self._norm_dtype_arg is None:
            norms = torch._foreach_norm(grads, 2)
        else:
            norms = torch._foreach_norm(grads, 2, dtype=self._norm_dtype_arg)
        if self._spread:  # parameters on several devices: gathered device to device
            norms = [n.to(self._norms.device) for n in norms]
        torch.stack(norms, out=self._norms[slot, :width])

    def _record_loss(self, slot: int, loss: Any) -> None:
        if loss is None:
            self._loss_given[slot] = None
            return
        if not isinstance(loss, torch.Tensor):
            try:
                self._loss_given[slot] = float(loss)
            except (TypeError, ValueError):
                raise InvalidOptionError(
                    f"monitor.step(loss) takes the loss as a tensor or a number (got {type(loss).__name__})."
                ) from None
            return
        if loss.numel() != 1:
            raise InvalidOptionError(
                f"monitor.step(loss) takes the scalar loss (got a tensor of shape {tuple(loss.shape)}); pass "
                "the loss that backward() was called on."
            )
        if self._losses is None or self._losses.device != loss.device:
            self._losses = torch.zeros(self._capacity, dtype=torch.float64, device=loss.device)
            self._loss_given = [None if kind == "tensor" else kind for kind in self._loss_given]
        self._losses[slot].copy_(loss.detach().reshape(()))
        self._loss_given[slot] = "tensor"
        if not self._skips_read and loss.grad_fn is not None:
            # Skip connections are read off the autograd graph once, as a scan does: the diagnosis holds
            # slow growth over residual blocks to a warning.
            self._skips_read = True
            if self.header.structure.residual is None and not isinstance(self._model, torch.jit.ScriptModule):
                self.header.structure.residual = has_skip_connections(loss, self._graph_nodes)

    def _choose_stride(self) -> None:
        """norms_every="auto": the smallest of 1, 2, 4, 8 (and at most ``every``) at which the per-step norms,
        with the watch on the steps between, cost at most AUTO_NORM_SHARE of the training step; without the
        watch where it would not fit (a watch not yet timed is tried)."""
        if not self._intervals:
            return
        self._stride_chosen = True
        budget, full = AUTO_NORM_SHARE * statistics.median(self._intervals), statistics.median(self._costs)
        watch = statistics.median(self._watch_costs) if self._watch_costs else 0.0
        most = min(AUTO_MAX_STRIDE, self.every)

        def stride_for(between: float) -> int:
            stride = 1
            while full / stride + between * (1 - 1 / stride) > budget and stride < most:
                stride *= 2
            return stride

        stride = stride_for(watch)
        self._watching = self._watch_width > 0 and stride > 1 and full / stride + watch * (1 - 1 / stride) <= budget
        if not self._watching:
            stride = stride_for(0.0)
        if stride != self._stride:
            self._next_norms_step += stride - self._stride
            self._stride = stride

    def _sampled(self, step: int) -> bool:
        return (step - self.header.start_step) % self.every == 0

    def _arm(self) -> None:
        if self._hooks is None:
            self._hooks = _SignalHooks(self._layers, self._model)

    # ------------------------------------------------------------------------------ the layers

    def _plan_layers(self, order: list[int]) -> tuple[list[LayerInfo], list[tuple[int, str]]]:
        """List the layers as the scan does (layer_figures): those in ``order`` (definition indices, in the order
        the forward pass first ran them), then the others; every trainable parameter tracked once, by the first
        layer listed that holds it (tied weights). Returns what each layer is, and the watched layers."""
        self._ranking = ranked(order, len(self._defined))
        self._layers = [(shown_name(self._defined[i][0]), self._defined[i][1]) for i in self._ranking]
        positions = list(range(len(self._layers)))
        # The watch: each layer's small parameters (biases, norm scales: at most one dimension), whose gradients
        # are normed on the steps whose full norms are skipped (``norms_every`` above 1). They are kilobytes where
        # the weights are megabytes, and a bias's gradient is the layer's output gradient summed over the batch,
        # so a spike shows in it at its own step. Their columns come first in a row: the watch is a slice of it.
        self._tracked = sorted(owned_parameters(self._layers, positions), key=lambda owned: owned[2].dim() > 1)
        watched = _watched(self._layers, self._tracked)
        self._watch_width = sum(1 for _, _, p in self._tracked if p.dim() <= 1) if watched else 0
        self._watched_layers = [index for index, _ in watched]
        self._params = [param for _, _, param in self._tracked]
        self._owner = [owner for owner, _, _ in self._tracked]
        held = held_parameters(self._layers, positions)
        infos = [
            LayerInfo(name, layer_type(module), count, trainable, self._weight_plan.fan_in[index], shared)
            for (name, module), (count, trainable, shared), index in zip(self._layers, held, self._ranking)
        ]
        return infos, watched

    def _settle_layers(self) -> None:
        """At the first step: the layers in the order its forward pass ran them, where the signal hooks saw that
        pass (a Monitor made before it, with ``signals``), so that a tied parameter belongs to the layer that runs
        first, as in a scan (issue 24: the monitor gave it to the layer defined first). Without that pass the
        layers stay in definition order for the whole run."""
        self._layers_settled = True
        hooks = self._hooks
        if hooks is None or not hooks.order:
            return
        definition = {id(module): index for index, (_, module) in enumerate(self._defined)}
        order = [definition[id(hooks.layers[index][1])] for index in hooks.order]
        if ranked(order, len(self._defined)) == self._ranking:
            return
        self.header.layers, watched = self._plan_layers(order)
        self._judge = TrainingJudge(self.header.layers, self.header.rules, watched)

    def _positions(self, hooks: _SignalHooks) -> list[int]:
        """Where each of the hooks' layers is listed now (hooks armed before _settle_layers list them in
        definition order)."""
        if hooks.layers is self._layers:
            return list(range(len(self._layers)))
        position = {id(module): k for k, (_, module) in enumerate(self._layers)}
        return [position[id(module)] for _, module in hooks.layers]

    # ------------------------------------------------------------------------------ read-outs

    def _drain(self) -> list[Problem]:
        """The ring is full before a sampled step (``every`` above its rows): judge its steps now and keep
        their largest total norm for the next record. The one case of a read-out between samples."""
        steps = self._row_steps[: self._unread]
        rows, full, losses, _ = self._transfer([])
        problems = self._judge.judge_steps(steps, self._series(rows, full), losses, steps[-1])
        self._carried_max = _largest([self._carried_max, *(_total(row) for row, f in zip(rows, full) if f)])
        self._carried_rows += sum(full)
        self._carried_problems += problems
        self.problems += problems
        return problems

    def _transfer(
        self, scalars: list[torch.Tensor]
    ) -> tuple[list[list[float | None]], list[bool], list[float | None], list[float]]:
        """The one host transfer: every unread step's norms (and whether they are all of them, or the
        watch's only), its loss, and the values of ``scalars`` (0-d or 1-d tensors), in order. Empties the ring."""
        count, width = self._unread, len(self._tracked)
        device = self._norms.device if self._norms is not None else next(self._model.parameters()).device
        parts = []
        if self._norms is not None:
            parts.append(self._norms[:count].reshape(-1))
        if self._losses is not None:
            parts.append(self._losses[:count])
        if scalars:
            parts.append(torch.cat([s.to(device, torch.float64).reshape(-1) for s in scalars]))
        host = torch.cat([part.to(device, torch.float64) for part in parts]).tolist() if parts else []
        rows: list[list[float | None]] = []
        full = self._full[:count]
        for slot in range(count):
            taken = width if full[slot] else self._watch_width
            row: list[float | None] = (
                host[slot * width : slot * width + taken] if self._norms is not None else [None] * taken
            )
            for i in self._missing[slot] or ():
                row[i] = None
            rows.append(row)
        offset = count * width if self._norms is not None else 0
        losses = [
            host[offset + slot] if self._loss_given[slot] == "tensor" else self._loss_given[slot]
            for slot in range(count)
        ]
        offset += count if self._losses is not None else 0
        self._unread = 0
        self._loss_given = [None] * self._capacity
        return rows, full, losses, host[offset:]

    def _read(self, step: int, sampled: bool) -> list[Problem]:
        """Read out the steps since the previous record with this step's figures, judge them, keep a record."""
        steps = self._row_steps[: self._unread]
        hooks = self._hooks if sampled else None
        measured = self._weight_plan.measure()  # (the weights' tensors, their norms and sums on the device)
        scalars = [measured[1]] if measured is not None else []
        scalars += [value for _, _, value in hooks.values] if hooks is not None else []
        rows, full, losses, values = self._transfer(scalars)
        if sampled:  # (the gradients are this step's only when step() reads them)
            rows[-1] = self._exact(rows[-1])
        if measured is None:  # (no layer holds a weight)
            n_weights, by_definition = 0, [{} for _ in self._defined]
        else:
            n_weights = len(measured[1])
            by_definition = self._weight_plan.read(measured[0], values[:n_weights])
        weights = [by_definition[i] for i in self._ranking]
        record = self._record(
            step,
            [row for row, f in zip(rows, full) if f],
            [loss for loss, f in zip(losses, full) if f],
            weights,
            values[n_weights:],
            hooks,
        )
        record.steps = step - self._last_record_step
        record.norm_steps = sum(full) + self._carried_rows
        record.max_total_grad_norm = _largest([self._carried_max, record.max_total_grad_norm])
        self._last_record_step = step
        problems = self._judge.judge_steps(steps, self._series(rows, full), losses, step)
        problems += self._judge.judge_findings(diagnose_record(self.header, record).findings, step)
        problems.sort(key=lambda problem: problem.step)
        record.problems = self._carried_problems + problems
        self._carried_max, self._carried_problems, self._carried_rows = None, [], 0
        self._history.append(record)
        self.problems += problems
        if hooks is not None:
            hooks.remove()
            self._graph_nodes += hooks.take_nodes()
            self._hooks = None
        if self._log is not None:
            self._write_log(json_line(record_document(record)))
        return problems

    def _read_unread(self) -> list[Problem]:
        """check() and detach(): the rows not yet read, judged, with a record of the last step whose norms were
        all taken (the watch's steps after it are judged with it)."""
        last_full = [slot for slot in range(self._unread) if self._full[slot]]
        if not last_full:
            return self._drain() if self._unread else []
        return self._read(self._row_steps[last_full[-1]], sampled=False)

    def _exact(self, row: list[float | None]) -> list[float | None]:
        """The sampled step's norms, taken again in float64 where float32 may have under- or overflowed, as the
        scan takes them (layer_figures.exact_norms)."""
        present = [i for i, value in enumerate(row) if value is not None and self._params[i].grad is not None]
        if not present:
            return row
        values = exact_norms([self._params[i].grad for i in present], [row[i] for i in present])
        row = list(row)
        for i, value in zip(present, values):
            row[i] = value
        return row

    def _series(self, rows: list[list[float | None]], full: list[bool]) -> list[list[float | None]]:
        """The judge's rows: each layer's norm, then each watched layer's small-parameter norm. A row holds
        the first where every norm was taken and the second where the watch's only were."""
        unread_layers, unread_watch = [None] * len(self._layers), [None] * len(self._watched_layers)
        series = []
        for row, whole in zip(rows, full):
            norms = self._layer_norms(row)
            series.append(norms + unread_watch if whole else unread_layers + [norms[i] for i in self._watched_layers])
        return series

    def _layer_norms(self, row: list[float | None]) -> list[float | None]:
        """Per layer: the norm over its own tracked parameters' gradients in the row (None when none had one;
        a watch row holds only the first columns)."""
        squares: list[float | None] = [None] * len(self._layers)
        for owner, value in zip(self._owner, row):
            if value is not None:
                squares[owner] = (squares[owner] or 0.0) + value * value
        return [None if sq is None else math.sqrt(sq) for sq in squares]

    def _record(self, step, rows, losses, weights, signals, hooks) -> StepRecord:
        """The record of a read-out: the last row's gradient figures, ``weights`` (each layer's weight figures)
        and ``signals`` (the values of ``hooks``), per layer as the scan computes them (layer_figures)."""
        row, count = rows[-1], len(self._layers)
        present = [k for k, value in enumerate(row) if value is not None]
        weight_sq, other_sq, nonfinite, _ = gradient_squares(
            [self._tracked[k] for k in present], [row[k] for k in present], count
        )
        forward_sq, backward_sq = [0.0] * count, [0.0] * count
        backward_seen = [False] * count
        calls, numel = [0] * count, [0] * count
        if hooks is not None:
            positions = self._positions(hooks)
            for (kind, index, _), value in zip(hooks.values, signals):
                if kind == _SignalHooks.FORWARD:
                    forward_sq[positions[index]] += value * value
                else:
                    backward_sq[positions[index]] += value * value
                    backward_seen[positions[index]] = True
            for index, position in enumerate(positions):
                calls[position], numel[position] = hooks.calls[index], hooks.numel[index]
        # (a trainer may call a submodule rather than the model itself: then the first layer's input tells)
        batch = (hooks.batch or hooks.first_layer_batch or None) if hooks is not None else None
        layers = []
        for i, info in enumerate(self.header.layers):
            stats = LayerStats(
                name=info.name, type=info.type, param_count=info.param_count, trainable=info.trainable,
                shared_with=info.shared_with, calls=calls[i], grad_nonfinite=nonfinite[i], **weights[i],
            )  # fmt: skip
            if weight_sq[i] is not None or other_sq[i] is not None:
                figures = gradient_figures(weight_sq[i], other_sq[i], stats.weight_norm)
                stats.weight_grad_norm, stats.other_grad_norm, stats.grad_norm, stats.relative_grad = figures
            if numel[i]:
                stats.forward_rms = math.sqrt(forward_sq[i] / numel[i])
                stats.forward_nonfinite = not math.isfinite(stats.forward_rms)
            if backward_seen[i]:
                # per-sample RMS of the output gradient, as the scan reads it (the loss is a batch mean)
                stats.backward = math.sqrt((batch or 1) * backward_sq[i])
                stats.backward_nonfinite = not math.isfinite(stats.backward)
            layers.append(stats)
        totals = [_total(r) for r in rows]
        return StepRecord(
            step=step,
            steps=len(rows),
            loss=losses[-1],
            total_grad_norm=totals[-1],
            max_total_grad_norm=_largest(totals),
            batch_size=batch,
            signals=hooks is not None,
            layers=layers,
        )

    # ------------------------------------------------------------------------------ endings and output

    def _finish(self, raise_allowed: bool, stacklevel: int) -> list[Problem]:
        if not self._attached:
            return []
        try:
            found = self._read_unread()
        finally:
            if self._hooks is not None:
                self._hooks.remove()
                self._graph_nodes += self._hooks.take_nodes()
                self._hooks = None
            release_nodes(self._graph_nodes)
            self._attached = False
            self._norms = self._losses = None
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

    def _write_log(self, line: str) -> None:
        assert self._log is not None
        try:
            if not self._log_started:
                if line:
                    text = json_line(header_document(self.header)) + line
                    self._log.parent.mkdir(parents=True, exist_ok=True)
                    self._log.write_text(text, encoding="utf-8")
                    self._log_started = True
                else:  # at construction: create (empty) the file the header and records will go to
                    self._log.parent.mkdir(parents=True, exist_ok=True)
                    self._log.write_text("", encoding="utf-8")
                return
            with self._log.open("a", encoding="utf-8") as stream:
                stream.write(line)
        except OSError as error:
            raise GradcheckError(f"Cannot write the history to {self._log}: {error.strerror or error}.") from error

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


class _SignalHooks:
    """Module hooks for one sampled step: each layer's output norm, and through a tensor hook on that output,
    the norm of the gradient arriving at it (the backward signal). Kept as 0-d tensors on the device until
    the read-out; the root's input gives the batch size."""

    FORWARD, BACKWARD = 0, 1

    def __init__(self, layers: list[tuple[str, nn.Module]], root: nn.Module):
        self.layers = layers
        self.values: list[tuple[int, int, torch.Tensor]] = []
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
                    (self.FORWARD, index, torch.linalg.vector_norm(tensor.detach(), dtype=torch.float64))
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
                self.values.append((self.BACKWARD, index, torch.linalg.vector_norm(grad, dtype=torch.float64)))

        return hook


def _watched(
    layers: list[tuple[str, nn.Module]], tracked: list[tuple[int, bool, nn.Parameter]]
) -> list[tuple[int, str]]:
    """(layer index, its watched parameters' names) for the layers that own a tracked parameter of at most
    one dimension, unless every tracked parameter is one (then the full norms cost as little)."""
    owner_of = {id(param): owner for owner, _, param in tracked}
    if all(param.dim() <= 1 for _, _, param in tracked):
        return []
    watched = []
    for index, (_, module) in enumerate(layers):
        names = [n for n, p in module.named_parameters(recurse=False) if p.dim() <= 1 and owner_of.get(id(p)) == index]
        if names:
            watched.append((index, " and ".join(names)))
    return watched


def _total(row: list[float | None]) -> float | None:
    present = [value for value in row if value is not None]
    return math.sqrt(math.fsum(value * value for value in present)) if present else None


def _largest(values: list[float | None]) -> float | None:
    """The largest of the values given; NaN counts as the largest (it is the news), then infinity."""
    present = [value for value in values if value is not None]
    if any(value != value for value in present):
        return math.nan
    return max(present, default=None)


def _whole(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidOptionError(f"{name} must be a whole number of at least {minimum} (got {value!r}).")
    return value


def _on_problem(value: Any) -> OnProblem | ProblemHandler:
    if isinstance(value, OnProblem):
        return value
    if isinstance(value, str):
        try:
            return OnProblem(value)
        except ValueError:
            choices = ", ".join(repr(choice.value) for choice in OnProblem)
            raise InvalidOptionError(
                f"on_problem must be one of {choices}, or a function of the problem (got {value!r})."
            ) from None
    if callable(value):
        return value
    raise InvalidOptionError(f"on_problem must be 'warn', 'raise', 'record' or a function (got {value!r}).")
