"""The measurement layer: run a few forward/backward passes and record every layer's gradient health.

Nothing here prints or judges. Hooks keep only reductions (0-d norms), never copies of activations or
gradients, and all of a pass's reductions reach the host in one transfer (no ``.item()`` per layer).
The model is left exactly as found: hooks removed, train/eval flags, ``.grad``, buffers (BatchNorm
running statistics) and the global RNG state restored, even when the model raises.

This module wires the pieces together; each concern has its own module: passes.py (one pass, and what is put
back), outputs.py (output norms and gradients), activations.py, time_profiles.py, fp16_range.py, precision.py
(float64 re-measure, fp16 loss scale), recorder.py (one pass's figures), results.py, graph.py (skips read off
the autograd graph), hooks.py and torch_compat.py (the hooks' fast and public paths).

A probe is not thread-safe: it pauses the process-wide cyclic garbage collector, adds hooks to the model's
modules and seeds (then restores) the global RNG, so two probes must not run at once in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace

import torch
from torch import nn

from gradcheck_cli.common import stages
from gradcheck_cli.common.batches import Batch, BatchFn, LossFn, ProgressFn
from gradcheck_cli.common.errors import InvalidOptionError
from gradcheck_cli.common.stats import ModelStructure, ProbeResult
from gradcheck_cli.measure import torch_compat
from gradcheck_cli.measure.fp16_range import FP16_INITIAL_LOSS_SCALE
from gradcheck_cli.measure.graph import describe_structure
from gradcheck_cli.measure.hooks import ForwardHooks, wrappable
from gradcheck_cli.measure.layer_figures import Reducer, parameter_layers
from gradcheck_cli.measure.layer_types import ACTIVATION_TYPES
from gradcheck_cli.measure.nonfinite import trace_nonfinite
from gradcheck_cli.measure.pass_figures import PassFigures
from gradcheck_cli.measure.passes import (
    cuda_devices,
    cyclic_gc_paused,
    forward_backward,
    model_parameters,
    rng_state,
    seed_rng,
    snapshot,
)
from gradcheck_cli.measure.placement import AS_PLACED, Placement
from gradcheck_cli.measure.precision import PassPlan
from gradcheck_cli.measure.recorder import Recorder
from gradcheck_cli.measure.recurrent import StackedLayers, stacked_modules
from gradcheck_cli.measure.results import assemble
from gradcheck_cli.measure.tensors import batch_size, input_kinds


def probe_model(
    model: nn.Module,
    make_batch: BatchFn,
    loss_fn: LossFn,
    *,
    passes: int = 3,
    seed: int = 0,
    train_mode: bool = True,
    name: str | None = None,
    structure: ModelStructure | None = None,
    progress: ProgressFn | None = None,
    clip_grad_norm: float | None = None,
    reducer: Reducer | None = None,
    placement: Placement = AS_PLACED,
) -> ProbeResult:
    """Run ``passes`` forward/backward passes and measure every layer.

    The first pass computes and reads the parameter gradients; the later ones, where the model takes hooks
    and the scan is not distributed, are signal passes: outputs and output gradients only, without computing
    any parameter gradient but those of the layers whose gradient was exactly zero on the first pass (whether
    any pass gives them one: LayerStats.grad_nonzero_in_a_pass). Output and output-gradient figures are medians
    over all passes.

    ``make_batch(i)`` gives the batch of pass ``i``; it and the model draw randomness from the global
    RNG, seeded with ``seed`` here and restored afterwards. ``loss_fn(output, batch)`` gives a scalar.
    With ``clip_grad_norm`` the parameter-gradient figures are those of gradients clipped to that total norm,
    as a training step with clipping would see them (the backward signal is measured before clipping).
    With ``reducer`` each process measures its slice of the batch and the figures are summed over processes.
    ``placement.amp`` runs the passes under autocast; the model is not moved (batches follow its parameters).

    Not thread-safe: the passes run with the process-wide cyclic garbage collector paused (its state is put
    back on every way out), the probe's hooks on the model's modules and the global RNG seeded.
    """
    if passes < 1:
        raise InvalidOptionError(f"passes must be at least 1 (got {passes}); try --passes 3.")
    fast = torch_compat.fast_hooks()  # the hooks' path (torch_compat), one for the whole probe
    all_modules = list(model.named_modules())
    wrap = wrappable(all_modules, fast)
    scripted = isinstance(model, torch.jit.ScriptModule)
    # A stacked nn.LSTM/GRU/RNN is measured as its layers, a row each (recurrent.py; issue 22): not where its forward
    # cannot be replaced on the instance (see wrappable), nor in TorchScript or across processes.
    stacked = stacked_modules(all_modules, fast)
    stacks = StackedLayers(stacked if stacked and reducer is None and wrap and not scripted else [])
    recorder = Recorder(stacks.replace(parameter_layers(all_modules)), reducer, stacks, fast)
    started = time.perf_counter()
    params = model_parameters(all_modules, fast)
    devices = cuda_devices(params)
    amp = placement.amp
    plan = PassPlan(FP16_INITIAL_LOSS_SCALE if amp == torch.float16 else 1.0)
    with ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=devices))
        stack.callback(snapshot(all_modules, params, fast))
        # TorchScript modules take no hooks: they are measured by their parameter gradients only.
        recorder.hooked = not scripted
        activation_hooks = _watch(stack, all_modules, recorder, stacks, wrap, fast)
        # Skips are read off the autograd graph once (also where the caller gave the structure: their count
        # says how many blocks the depth trend spans). A recurrent cell adds its input and state paths at
        # every step, which would read as skips, and TorchScript hides its ops: for those it stays unknown.
        recorder.read_skips = recorder.hooked and not any(isinstance(m, nn.RNNBase) for _, m in all_modules)
        # Every pass takes its backward by torch.autograd.grad of the layer outputs' gradient edges: the
        # backward signal and forward RMS vary from batch to batch and are taken on every pass, while the
        # parameter gradients are asked for on the first pass only and left uncomputed on the others (a
        # quarter to a third of a pass's work, and the read of every gradient). A distributed scan runs
        # .backward(): its gradient reductions live in the parameters' backward hooks.
        recorder.outputs.autograd_passes = recorder.hooked and reducer is None
        recorder.clip_grad_norm = clip_grad_norm
        if any(module.training != train_mode for _, module in all_modules):  # train() walks every module
            model.train(train_mode)
        seed_rng(seed, params)
        with cyclic_gc_paused():
            run = _PassRun(model, make_batch, loss_fn, params, recorder, amp, devices)
            per_pass, nonfinite_batch = run.all(passes, plan, activation_hooks, progress)
            # The passes say *that* a NaN/Inf occurred; one more pass with every module watched says where.
            origin = trace_nonfinite(model, nonfinite_batch, loss_fn) if nonfinite_batch is not None else None
    seconds = time.perf_counter() - started
    if structure is None:
        structure = describe_structure(model, skips=recorder.skips)
    elif recorder.skips is not None and structure.skip_merges is None:
        structure = replace(structure, skip_merges=recorder.skips.merges)
    result = assemble(model, params, name, recorder, per_pass, passes, seed, seconds, structure)
    result.nonfinite_origin = origin
    if amp is not None:
        result.amp = str(amp).replace("torch.", "")
        result.loss_scale = plan.loss_scale
    return result


def _watch(
    stack: ExitStack,
    all_modules: list[tuple[str, nn.Module]],
    recorder: Recorder,
    stacks: StackedLayers,
    wrap: bool,
    fast: bool,
) -> ForwardHooks:
    """Put the probe's hooks on the model, each set taken off when ``stack`` closes; the activation hooks,
    which the passes take off early."""
    hooks = ForwardHooks(wrap, fast)
    stack.callback(hooks.remove)
    for i, (_, module) in enumerate(recorder.layers if recorder.hooked else []):
        hooks.add(module, recorder.outputs.forward_hook(i))
    # Activations are watched in the first pass only (and the next, for a site whose output an in-place
    # op overwrote before it was read): its batch gives thousands of values per site, and a hook on every
    # activation of every pass would cost more than the passes themselves.
    activation_hooks = ForwardHooks(wrap, fast)
    stack.callback(activation_hooks.remove)
    stack.enter_context(stacks.layer_by_layer(recorder.time.add_layer_probe, recorder.first_pass))  # recurrent.py
    for module_name, module in all_modules:
        if isinstance(module, nn.RNNBase):
            if module not in stacks:
                hooks.add(module, recorder.time.pre_hook(module_name, module), pre=True)
        elif recorder.hooked and isinstance(module, ACTIVATION_TYPES):
            recorder.activations.hook(module_name, module, activation_hooks)
    return activation_hooks


class _PassRun:
    """The passes of one probe: each pass's batch, run until its figures stand (precision.PassPlan)."""

    def __init__(self, model, make_batch, loss_fn, params, recorder: Recorder, amp, devices: list[int]) -> None:
        self.model, self.make_batch, self.loss_fn, self.params = model, make_batch, loss_fn, params
        self.recorder, self.amp, self.devices = recorder, amp, devices
        self._calls, self._first_inputs = 0, None  # the model's calls that ran, and what the first was given

    def all(
        self, passes: int, plan: PassPlan, activation_hooks: ForwardHooks, progress: ProgressFn | None
    ) -> tuple[list[PassFigures], Batch | None]:
        """Every pass's figures, and the batch of the first pass that was not finite (None if all were)."""
        per_pass: list[PassFigures] = []
        nonfinite_batch = None
        for index in range(passes):
            figures, batch = self.one(index, plan)
            per_pass.append(figures)
            if not self.recorder.activations.pending:
                activation_hooks.remove()
            if nonfinite_batch is None and not figures.finite:
                nonfinite_batch = batch
            if progress is not None:
                progress(index + 1, passes)
        return per_pass, nonfinite_batch

    def one(self, index: int, plan: PassPlan) -> tuple[PassFigures, Batch]:
        """Pass ``index``, run again on the same batch (the RNG put back) until ``plan`` says its figures stand."""
        restore_rng: Callable[[], None] = rng_state(self.devices)
        plan.new_batch()
        while True:
            with stages.user_code(stages.INPUTS):
                batch = self.make_batch(index)
            self.recorder.start_pass(index == 0, self.amp, plan.loss_scale, plan.remeasure)
            inputs = input_kinds(batch)
            repeated = self._calls + 1 if self._calls and inputs == self._first_inputs else None
            loss = forward_backward(
                self.model, self.params, batch, self.loss_fn, self.recorder, self.amp, plan.loss_scale, repeated
            )
            self._calls, self._first_inputs = self._calls + 1, self._first_inputs or inputs
            figures = self.recorder.finish_pass(loss, batch_size(batch))
            if plan.settled(figures):
                return figures, batch
            restore_rng()
