"""Which steps the monitor reads: the sampled steps (``every``) and those whose per-layer gradient norms are
taken (``norms_every``, chosen from the monitor's own timings with "auto"). No torch, no clock of its own:
the Monitor reads the clock and hands the times in."""

from __future__ import annotations

import statistics
from collections import deque

# norms_every="auto": the per-step norms are taken on every step while ``step()`` costs at most this share
# of the training step around it (timed on the host, over the last AUTO_WINDOW steps that took them), and
# on every 2nd, 4th or 8th step where it costs more (a small model on a CPU), with the watch (the small
# parameters' norms) on the steps between while it fits in the same share. With the sampled steps' share (a
# few ms every ``every`` steps) the monitor stays under 2% of the step.
AUTO_NORM_SHARE = 0.01
AUTO_MAX_STRIDE = 8
AUTO_WINDOW = 16


class NormSchedule:
    """The steps of a run that are sampled, that take every norm, and that take the watch's only.

    Norms are taken every ``stride``-th step from the last that took them (sampled steps take them too); with
    ``watching``, the steps between take the watch's (the small parameters', which a model ``has_watch`` for).
    """

    def __init__(self, every: int, norms_every: int | str, start_step: int, has_watch: bool):
        self.every = every
        self.start_step = start_step
        self.auto = norms_every == "auto"
        self.stride = 1 if self.auto else norms_every
        self.next_norms_step = start_step
        self.has_watch = has_watch
        # The watch is read on the steps between full norms: always with a norms_every above 1, and with "auto"
        # while it fits (see choose_stride).
        self.watching = has_watch and self.stride > 1
        # norms_every="auto": step()'s own time on the steps that took norms, and the time between calls.
        self._costs: deque[float] = deque(maxlen=AUTO_WINDOW)
        self._watch_costs: deque[float] = deque(maxlen=AUTO_WINDOW)  # and on the steps that took the watch's
        self._intervals: deque[float] = deque(maxlen=AUTO_WINDOW)
        self._left_at: float | None = None
        self._stride_chosen = False

    def ring_rows(self) -> int:
        """Rows of per-step norms between two samples: every step's where any step may be read ("auto", or a
        watch), else every ``stride``-th's."""
        return self.every if self.auto or self.has_watch else -(-self.every // self.stride)

    def sampled(self, step: int) -> bool:
        return (step - self.start_step) % self.every == 0

    def takes_norms(self, step: int, sampled: bool) -> bool:
        """Whether ``step`` takes every norm (else the watch's, while ``watching``, or none)."""
        return sampled or step >= self.next_norms_step

    def entered(self, now: float) -> None:
        """step() was called at ``now``: the time since it last returned is the training step's."""
        if self._left_at is not None:
            self._intervals.append(now - self._left_at)

    def left(self, now: float) -> None:
        self._left_at = now

    def norms_taken(self, step: int) -> None:
        self.next_norms_step = step + self.stride

    def timed(self, full: bool, sampled: bool) -> bool:
        """Whether this step's cost counts for "auto": a step that took every norm and is not sampled (a sampled
        step's read-out costs more), or one that took the watch's."""
        return self.auto and (not sampled if full else self.watching)

    def add_cost(self, full: bool, seconds: float) -> None:
        """The cost of a ``timed`` step; the stride is first chosen once AUTO_WINDOW steps have taken norms."""
        if not full:
            self._watch_costs.append(seconds)
            return
        self._costs.append(seconds)
        if not self._stride_chosen and len(self._costs) == AUTO_WINDOW:
            self.choose_stride()

    def sample_read(self) -> None:
        """A sampled step was read: "auto" chooses the stride again from the latest timings."""
        if self.auto and self._costs:
            self.choose_stride()

    def choose_stride(self) -> None:
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
        self.watching = self.has_watch and stride > 1 and full / stride + watch * (1 - 1 / stride) <= budget
        if not self.watching:
            stride = stride_for(0.0)
        if stride != self.stride:
            self.next_norms_step += stride - self.stride
            self.stride = stride
