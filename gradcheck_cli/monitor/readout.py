"""A read-out: the ring's steps brought to the host with the read step's weight and signal figures, judged by the
rules over time and the scan's diagnosis, and kept as a record."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from gradcheck_cli.monitor.history import HistoryHeader, Problem, StepRecord, diagnose_record
from gradcheck_cli.monitor.records import exact_row, largest, step_record, total_norm
from gradcheck_cli.monitor.training_judge import TrainingJudge

if TYPE_CHECKING:
    from torch import nn

    from gradcheck_cli.measure.layer_figures import WeightPlan
    from gradcheck_cli.monitor.layers import LayerPlan
    from gradcheck_cli.monitor.ring import NormRing
    from gradcheck_cli.monitor.signals import SignalHooks


class ReadOut:
    """The judgement of a run's read-outs and the last ``keep`` records. A ring that fills before a sampled step
    (``every`` above its rows) is read out and judged then (``drain``); its largest total norm, its problems
    and its count of steps with every norm go into the next record."""

    def __init__(
        self, header: HistoryHeader, plan: LayerPlan, weights: WeightPlan, ring: NormRing, keep: int, model: nn.Module
    ):
        self.header, self.plan = header, plan
        self._weight_plan, self._ring, self._model = weights, ring, model
        self._judge = TrainingJudge(header.layers, header.rules, plan.watched)
        self.records: deque[StepRecord] = deque(maxlen=keep)
        self._carried_max, self._carried_problems, self._carried_rows = None, [], 0
        self._last_record_step = header.start_step - 1

    def relist(self, plan: LayerPlan) -> None:
        """The layers in a new order (LayerPlan.in_order_run), before any step was judged."""
        self.plan = plan
        self.header.layers = plan.infos
        self._judge = TrainingJudge(self.header.layers, self.header.rules, plan.watched)

    def drain(self) -> list[Problem]:
        """Judge the full ring's steps now, keeping what the next record carries of them."""
        steps = self._ring.row_steps[: self._ring.unread]
        rows, full, losses, _ = self._transfer([])
        problems = self._judge.judge_steps(steps, self.plan.series(rows, full), losses, steps[-1])
        self._carried_max = largest([self._carried_max, *(total_norm(row) for row, f in zip(rows, full) if f)])
        self._carried_rows += sum(full)
        self._carried_problems += problems
        return problems

    def read(self, step: int, sampled: bool, hooks: SignalHooks | None) -> tuple[list[Problem], StepRecord]:
        """Read out the steps since the previous record with ``step``'s figures (the values of ``hooks`` too),
        judge them, keep a record. ``sampled``: step() reads it, so the gradients are this step's."""
        steps = self._ring.row_steps[: self._ring.unread]
        measured = self._weight_plan.measure()  # (the weights' tensors, their norms and sums on the device)
        scalars = [measured[1]] if measured is not None else []
        scalars += [value for _, _, value in hooks.values] if hooks is not None else []
        rows, full, losses, values = self._transfer(scalars)
        if sampled:  # (the gradients are this step's only when step() reads them)
            rows[-1] = exact_row(rows[-1], self.plan.params)
        if measured is None:  # (no layer holds a weight)
            n_weights, by_definition = 0, [{} for _ in self.plan.defined]
        else:
            n_weights = len(measured[1])
            by_definition = self._weight_plan.read(measured[0], values[:n_weights])
        record = step_record(
            step,
            self.header.layers,
            self.plan.tracked,
            [row for row, f in zip(rows, full) if f],
            [loss for loss, f in zip(losses, full) if f],
            [by_definition[i] for i in self.plan.ranking],
            values[n_weights:],
            hooks,
            self.plan.positions(hooks.layers) if hooks is not None else [],
        )
        record.steps = step - self._last_record_step
        record.norm_steps = sum(full) + self._carried_rows
        record.max_total_grad_norm = largest([self._carried_max, record.max_total_grad_norm])
        self._last_record_step = step
        problems = self._judge.judge_steps(steps, self.plan.series(rows, full), losses, step)
        problems += self._judge.judge_findings(diagnose_record(self.header, record).findings, step)
        problems.sort(key=lambda problem: problem.step)
        record.problems = self._carried_problems + problems
        self._carried_max, self._carried_problems, self._carried_rows = None, [], 0
        self.records.append(record)
        return problems, record

    def _transfer(self, scalars):
        """The ring's rows, whether each is full, the losses and the values of ``scalars``, in one host transfer."""
        return self._ring.transfer(scalars, self.plan.watch_width, next(self._model.parameters()).device)
