"""The rules over time that judge a training run as the Monitor reads it (non-finite gradients, growth and
shrinkage against each layer's early median) and the scan's findings at its sampled steps, each problem reported
once and named at the layer nearest the loss. No torch."""

from __future__ import annotations

import math
import statistics
from typing import Any

from gradcheck_cli.common.choices import CauseId, FindingKind, Severity
from gradcheck_cli.monitor.history import GRADIENT_GROWTH, GRADIENT_SHRINK, NONFINITE, LayerInfo, Problem, Rules


class TrainingJudge:
    """The judgement of a run, fed in step order: the rules over time on every step's per-layer gradient
    norms (non-finite values, growth and shrinkage against each layer's early median), the scan's
    diagnosis on each sampled step, and each problem reported once.

    Where several layers show a problem at the same step, the one named first is the one nearest the
    loss: the backward pass reaches it first, and what it carries it passes on toward the input.
    """

    def __init__(self, layers: list[LayerInfo], rules: Rules, watched: list[tuple[int, str]] = ()):
        """``watched``: (layer index, what) for the layers whose small parameters (``what``: "bias",
        "weight and bias") are also judged as series of their own, read on steps whose full norms are not
        taken (the monitor's ``norms_every`` above 1): a row of ``judge_steps`` holds every layer's norm,
        then each watched layer's small-parameter norm."""
        # One series per layer, then one per watched layer: each with its own reference.
        self._layer_of = [*range(len(layers)), *(index for index, _ in watched)]
        self.names = [layers[index].name for index in self._layer_of]
        self._labels = [f"{layer.name} ({layer.type})" for layer in layers]
        self._labels += [f"{layers[index].name} ({layers[index].type}) {what}" for index, what in watched]
        # Where several series show a problem at a step, the one named is nearest the loss, and of a layer's
        # two series its full norm.
        self._rank = {series: (layer, series < len(layers)) for series, layer in enumerate(self._layer_of)}
        self.rules = rules
        self._early: list[list[tuple[int, float]]] = [[] for _ in self._layer_of]  # (step, norm) until complete
        self.reference: list[float | None] = [None] * len(self._layer_of)
        self._open_findings: set[str] = set()  # the scan's finding kinds shown at the last sample
        # Growth and shrinkage are reported once per episode: from the first step past the limit until a
        # step with no layer past it. Other layers crossing meanwhile are the same event spreading.
        self._open: set[str] = set()
        # After the first NaN/Inf nothing more is reported: what follows is its consequence.
        self.broken = False
        self._last_read: int | None = None  # the last step judged
        self._where = ""  # how the problems of the step being judged name it

    def reference_window(self, index: int) -> tuple[int, int] | None:
        early = self._early[index]
        if len(early) < self.rules.reference_steps:
            return None
        return early[0][0], early[-1][0]

    def judge_steps(
        self, steps: list[int], norms: list[list[float | None]], losses: list[float | None], found_at: int
    ) -> list[Problem]:
        """``norms[t][i]``: series i's gradient norm at ``steps[t]`` (None: not read, or no gradient, at that
        step); the series are the layers, then the watched layers' small parameters (see __init__)."""
        problems: list[Problem] = []
        for step, row, loss in zip(steps, norms, losses):
            self._where = self._step_text(step)
            if not self.broken:
                problems += self._nonfinite(step, row, loss, found_at)
            if not self.broken:
                problems += self._over_time(step, row, found_at)
            self._learn(step, row)
            self._last_read = step
        return problems

    def _step_text(self, step: int) -> str:
        """How a problem names its step: with the monitor's ``norms_every`` above 1, the steps between two
        reads were not seen, so the problem began at one of them."""
        last = self._last_read
        if last is None or step - last <= 1:
            return f"step {step}"
        return f"step {step} (the first step read since step {last})"

    def judge_findings(self, findings: list[Any], step: int) -> list[Problem]:
        """The scan's findings at a sampled step that are problems: errors, except those that exact zeros of
        zero-initialized layers may explain (training steps the model itself; the next sample tells). A kind
        is reported once per episode: from the first sample that shows it until a sample without it."""
        problems = []
        shown = set()
        for finding in findings:
            if self.broken or finding.severity is not Severity.ERROR:
                continue
            if finding.kind is FindingKind.BASELINE_REGRESSION:
                continue
            if any(cause.id is CauseId.ZERO_INIT for cause in finding.causes):
                continue
            kind = finding.kind.value
            shown.add(kind)
            if kind in self._open_findings:
                continue
            if kind == NONFINITE:  # a NaN the per-step figures did not show (an activation): one per run too
                self.broken = True
            layers = list(finding.layers)
            message = f"step {step}: {finding.message}"
            evidence = {key: value for key, value in finding.evidence.items() if value is not None}
            problems.append(Problem(kind, step, layers[0] if layers else None, message, step, layers, evidence))
        self._open_findings = shown
        return problems

    def _nonfinite(self, step: int, row: list[float | None], loss: float | None, found_at: int) -> list[Problem]:
        bad = [i for i, value in enumerate(row) if value is not None and not math.isfinite(value)]
        loss_bad = loss is not None and not math.isfinite(loss)
        if not (bad or loss_bad):
            return []
        self.broken = True
        bad = self._nearest_first(bad)
        layers = self._layer_names(bad)
        figures: dict[str, Any] = {"loss": loss, "nonfinite_layers": len(layers)}
        loss_text = _text(loss) if loss is not None else "not given"
        if loss_bad:
            first = None
            message = f"{self._where}: non-finite loss: the loss is {loss_text}"
            if bad:
                message += f" and {len(layers)} layer(s) have non-finite gradients ({_listed(layers)})"
        else:
            first = layers[0]
            figures["grad_norm"] = value = row[bad[0]]
            # (the per-step norms are float32: an Inf there may also be a finite norm past its range)
            overflow = " (an Inf in it, or a norm past float32's 1.8e19)" if value == math.inf else ""
            message = f"{self._where}: non-finite gradient: the gradient norm of {self._labels[bad[0]]} is {_text(value)}{overflow}"
            if len(layers) > 1:
                message += (
                    f", the layer nearest the loss of {len(layers)} with non-finite gradients ({_listed(layers)})"
                )
            message += f"; the loss is {loss_text}"
        message += "."
        return [Problem(NONFINITE, step, first, message, found_at, layers, figures)]

    def _over_time(self, step: int, row: list[float | None], found_at: int) -> list[Problem]:
        grown, shrunk = [], []
        for i, value in enumerate(row):
            reference = self.reference[i]
            if value is None or reference is None or not math.isfinite(value) or reference <= 0:
                continue
            if value > reference * self.rules.grow_factor:
                grown.append(i)
            elif value < reference / self.rules.shrink_factor:
                shrunk.append(i)
        problems = []
        for kind, indices in ((GRADIENT_GROWTH, grown), (GRADIENT_SHRINK, shrunk)):
            if not indices:
                self._open.discard(kind)
                continue
            # Layers whose gradient stops while others explode (saturated, dead) are part of the explosion.
            if kind in self._open or (kind == GRADIENT_SHRINK and GRADIENT_GROWTH in self._open):
                continue
            self._open.add(kind)
            indices = self._nearest_first(indices)
            layers = self._layer_names(indices)
            index = indices[0]
            value, reference = row[index], self.reference[index]
            low, high = self.reference_window(index) or (step, step)
            factor = value / reference
            if kind == GRADIENT_GROWTH:
                change = f"grew x{factor:.3g}"
                limit = f"x{self.rules.grow_factor:g}"
            else:
                change = f"shrank to x{factor:.3g}"
                limit = f"x1/{self.rules.shrink_factor:g}"
            others = f"; {len(layers) - 1} more layer(s) past {limit} at that step ({_listed(layers[1:])})"
            message = (
                f"{self._where}: the gradient norm of {self._labels[index]} {change} against its median over steps "
                f"{low}-{high} ({value:.3g} vs {reference:.3g}){others if len(layers) > 1 else ''}."
            )
            figures = {"grad_norm": value, "reference": reference, "factor": factor, "reference_steps": [low, high]}
            problems.append(Problem(kind, step, layers[0], message, found_at, layers, figures))
        return problems

    def _nearest_first(self, series: list[int]) -> list[int]:
        """The series in the order a problem names them: the layer nearest the loss first (the backward pass
        reaches it first, and what it carries it passes on toward the input), its full norm before its
        small parameters'."""
        return sorted(series, key=self._rank.__getitem__, reverse=True)

    def _layer_names(self, series: list[int]) -> list[str]:
        return list(dict.fromkeys(self.names[i] for i in series))

    def _learn(self, step: int, row: list[float | None]) -> None:
        for i, value in enumerate(row):
            if self.reference[i] is not None or value is None or not math.isfinite(value):
                continue
            self._early[i].append((step, value))
            if len(self._early[i]) == self.rules.reference_steps:
                self.reference[i] = statistics.median([v for _, v in self._early[i]])


def _text(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:.3g}"


def _listed(names: list[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
