"""One probe's recorder: the pieces that watch a pass (outputs, activations, time profiles, fp16 ranges) put
together, the parameter gradients each pass reads, and one pass's reductions read back in one transfer and
unpacked into PassFigures."""

from __future__ import annotations

import math

import torch
from torch import nn

from gradcheck_cli.measure.activations import ActivationWatch
from gradcheck_cli.measure.fp16_range import Fp16Ranges
from gradcheck_cli.measure.graph import Skips
from gradcheck_cli.measure.layer_figures import (
    NORM_DTYPE,
    Reducer,
    exact_norms,
    fused_norms,
    gradient_squares,
    owned_parameters,
    stack_on,
    sum_over_processes,
)
from gradcheck_cli.measure.outputs import OutputNorms, OutputWatch
from gradcheck_cli.measure.pass_figures import PassFigures
from gradcheck_cli.measure.precision import float64_slots
from gradcheck_cli.measure.recurrent import StackedLayers
from gradcheck_cli.measure.time_profiles import TimeProfiles

ParamEntry = tuple[int, bool, nn.Parameter]  # (owning layer, is-a-weight, parameter)


class Recorder:
    """What one probe records, pass by pass. The first pass reads the parameter gradients; a later pass of a
    hooked model only those of the layers whose gradient was exactly zero on the first (a loss can reach a layer
    in some batches only: hard-negative mining, masked tokens; issue 22), and none where there are none. Every
    pass's reductions reach the host in one ``.tolist()`` (finish_pass)."""

    def __init__(
        self, layers: list[tuple[str, nn.Module]], reducer: Reducer | None, stacks: StackedLayers, fast: bool
    ) -> None:
        self.layers = layers
        self.reducer = reducer
        self.norms = OutputNorms()
        self.fp16 = Fp16Ranges()
        self.outputs = OutputWatch(layers, self.norms, self.fp16, fast)
        self.activations = ActivationWatch(self.outputs)
        self.time = TimeProfiles(stacks)
        self.hooked = True  # False for TorchScript, which takes no hooks: measured by its parameter gradients
        self.read_skips = False
        self.skips: Skips | None = None  # None: not read (given a structure, TorchScript, recurrent)
        self.clip_grad_norm: float | None = None
        self._first = True
        self._remeasure: PassFigures | None = None  # see start_pass
        self._loss_scale = 1.0
        self._param_grads: tuple[torch.Tensor | None, ...] = ()  # autograd.grad's, in _read_params' order
        self._owned: list[ParamEntry] | None = None
        self._rechecked: list[ParamEntry] = []
        self.nonzero_grad: set[int] = set()  # layers a pass gave a finite, nonzero parameter gradient

    def start_pass(
        self, first: bool, amp: torch.dtype | None = None, loss_scale: float = 1.0, remeasure: PassFigures | None = None
    ) -> None:
        """``first``: the first pass, whose output norms are taken in their hooks while it notes which outputs
        in-place ops overwrite, and which reads the parameter gradients.
        ``amp``: the passes run under autocast, so output gradients are also sorted into fp16's ranges;
        ``loss_scale``: what the loss was multiplied by, divided out of every gradient figure.
        ``remeasure``: this batch's figures from a pass that was not exact, measured again: the norms that left
        float32's range there are taken in float64 (precision.float64_slots has marked them), and its
        parameter-gradient figures, exact already (exact_norms), are kept rather than computed again."""
        self._first, self._remeasure, self._loss_scale = first, remeasure, loss_scale
        self._param_grads = ()
        self.norms.start_pass(first)
        self.fp16.start_pass(amp, loss_scale)
        self.time.start_pass()
        self.outputs.start_pass(first)
        self.activations.start_pass()

    def first_pass(self) -> bool:
        return self._first

    def _read_params(self) -> list[ParamEntry]:
        """The parameters whose gradients this pass reads: all on the first pass (all passes when no hook shows
        anything else); on the others, those of the layers whose gradient was exactly zero on the first (see
        _note_nonzero_gradients), none where there are none."""
        if self.hooked and (not self._first or self._remeasure is not None):
            return self._rechecked if not self._first and self._remeasure is None else []
        if self._owned is None:  # the layers' order is known once the first forward pass has run
            self._owned = owned_parameters(self.layers, self.outputs.ranked())
        return self._owned

    def take_gradients(self, loss: torch.Tensor) -> None:
        """A pass's backward: the gradients of the outputs' edges and of the recurrent time probes by
        torch.autograd.grad, with the parameters' where this pass reads them (OutputWatch.take_gradients)."""
        probes = [probe for _, probe, _ in self.time.probes]
        params = [p for _, _, p in self._read_params()]
        grads = self.outputs.take_gradients(loss, [*probes, *params])
        for probe, grad in zip(probes, grads):
            probe.grad = grad
        self._param_grads = grads[len(probes) :]

    def finish_pass(self, loss: torch.Tensor, batch_size: int) -> PassFigures:
        """The pass's figures, read back in one transfer; plans the next pass's float64 slots."""
        self.norms.note_overwrite()
        self.norms.reduce_kept()
        params = self._read_params()
        grads = list(self._param_grads) if self.outputs.autograd_passes else [p.grad for _, _, p in params]
        present = [g for g in grads if g is not None]
        if self.reducer is not None:  # this process's shard of each gradient
            present = [self.reducer.local(g) for g in present]
        # Parameter gradients hold most of the elements: one fused float32 norm each, taken again in float64
        # only where the result says float32 was not exact (see exact_norms).
        norms = fused_norms(present)
        steps = self.time.step_sums()
        narrow = [*self.norms.narrow, *norms]
        wide = [*self.norms.wide, loss.detach().reshape(()).to(NORM_DTYPE)]
        device = wide[-1].device
        parts = [stack_on(narrow, device).to(NORM_DTYPE)] if narrow else []
        counts = self.fp16.counts
        parts_after = [stack_on([c for _, c in counts], device).to(NORM_DTYPE).flatten()] if counts else []
        flat = torch.cat([*parts, stack_on(wide, device), *[s.to(device) for s in steps], *parts_after])
        if self.reducer is not None:
            flat = sum_over_processes(flat, len(narrow) + len(wide) - 1, self.reducer)
        host = flat.tolist()  # the one host transfer of this pass
        n_narrow, n_grads = len(self.norms.narrow), len(present)
        grad_norms = exact_norms(present, host[n_narrow : n_narrow + n_grads], self.reducer)
        if self.clip_grad_norm is not None:  # what training with clipping would step with (the scaled gradients)
            grad_norms = clipped(grad_norms, self.clip_grad_norm * self._loss_scale)
        figures = self._unpack(host, params, grads, grad_norms, batch_size, len(narrow) + len(wide))
        figures.exact = figures.exact and not self.norms.overwritten
        if self._remeasure is not None:
            kept = self._remeasure
            figures.weight_grad_sq, figures.other_grad_sq = kept.weight_grad_sq, kept.other_grad_sq
            figures.grad_nonfinite, figures.total_grad_norm = kept.grad_nonfinite, kept.total_grad_norm
        self._note_nonzero_gradients(figures)
        self.activations.finish_pass(figures.exact)
        self.norms.wide_keys = float64_slots(figures, self._loss_scale)  # for the next pass, or this one again
        return figures

    def _note_nonzero_gradients(self, figures: PassFigures) -> None:
        """The layers this pass gave a finite, nonzero gradient; after the first pass, which layers' gradients the
        later passes read again: those exactly zero or absent there. A later pass of a hooked model reads only
        those, and its gradient figures are dropped, so that every layer's stay the first pass's."""
        weight_sq, other_sq = figures.weight_grad_sq, figures.other_grad_sq
        if self.hooked and not self._first:
            if not self._rechecked:  # (a signal pass: no parameter gradient read)
                return
            owners = {owner for owner, _, _ in self._rechecked}
        else:
            owners = range(len(self.layers))
        sums = {index: (weight_sq[index] or 0.0) + (other_sq[index] or 0.0) for index in owners}
        self.nonzero_grad.update(index for index, sq in sums.items() if 0.0 < sq < math.inf)
        if self._first:
            self._rechecked = [entry for entry in self._owned or () if sums[entry[0]] == 0.0]
        elif self.hooked:
            n_layers = len(self.layers)
            figures.weight_grad_sq, figures.other_grad_sq = [None] * n_layers, [None] * n_layers
            figures.grad_nonfinite, figures.total_grad_norm = [False] * n_layers, None

    def _unpack(self, host, params, grads, grad_norms, batch_size, n_scalars) -> PassFigures:
        """``host``: the narrow norms, the parameter-gradient norms, the wide norms and the loss (``n_scalars``
        in all), then the time steps and the fp16 counts."""
        n_layers = len(self.layers)
        forward_sq, backward_sq, backward_seen, exact = self.norms.unpack(host, len(grad_norms), n_layers)
        with_grad = [entry for entry, grad in zip(params, grads) if grad is not None]
        weight_sq, other_sq, grad_nonfinite, total_sq = gradient_squares(with_grad, grad_norms, n_layers)
        loss_value = host[n_scalars - 1]
        time_steps, offset = self.time.unpack(host, n_scalars)
        fp16_counts = self.fp16.unpack(host, offset)
        # Gradients carry the loss scale: divide it out (a power of two, so exactly).
        scale = self._loss_scale
        if scale != 1.0:
            backward_sq = [sq / (scale * scale) for sq in backward_sq]
            weight_sq = [None if sq is None else sq / (scale * scale) for sq in weight_sq]
            other_sq = [None if sq is None else sq / (scale * scale) for sq in other_sq]
            total_sq /= scale * scale
            time_steps = {name: [v / (scale * scale) for v in values] for name, values in time_steps.items()}
        numel = list(self.outputs.numel)
        if self.reducer is not None:  # sums over N processes of equal slices: see sum_over_processes
            n = self.reducer.world_size
            backward_sq = [sq / (n * n) for sq in backward_sq]
            time_steps = {name: [v / (n * n) for v in values] for name, values in time_steps.items()}
            loss_value, numel, batch_size = loss_value / n, [count * n for count in numel], batch_size * n
        return PassFigures(
            forward_sq, numel, backward_sq, backward_seen, weight_sq, other_sq, grad_nonfinite,
            time_steps, loss_value, math.sqrt(total_sq) if params else None, batch_size, exact,
            fp16_counts,
        )  # fmt: skip


def clipped(norms: list[float], max_norm: float) -> list[float]:
    """The norms of the gradients torch.nn.utils.clip_grad_norm_ would leave: all scaled by one coefficient,
    max_norm over their total norm, where that is below 1 (NaN where the total is: the gradients become NaN)."""
    coefficient = max_norm / (math.sqrt(sum(norm * norm for norm in norms)) + 1e-6)
    if math.isnan(coefficient) or coefficient < 1.0:
        return [norm * coefficient for norm in norms]
    return norms
