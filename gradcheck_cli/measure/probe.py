"""The measurement layer: run a few forward/backward passes and record every layer's gradient health.

Nothing here prints or judges. Hooks keep only reductions (0-d norms), never copies of activations or
gradients, and all of a pass's reductions reach the host in one transfer (no ``.item()`` per layer).
The model is left exactly as found: hooks removed, train/eval flags, ``.grad``, buffers (BatchNorm
running statistics) and the global RNG state restored, even when the model raises.
"""

from __future__ import annotations

import functools
import gc
import math
import statistics
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.utils.hooks import RemovableHandle

from gradcheck_cli.common import stages
from gradcheck_cli.common.batches import Batch, BatchFn, LossFn, ProgressFn
from gradcheck_cli.common.errors import (
    GradcheckError,
    InvalidOptionError,
    ModelRunError,
    RepeatCallError,
    describe_exception,
)
from gradcheck_cli.common.stats import ActivationStats, LayerStats, ModelStructure, ProbeResult, RecurrentStats
from gradcheck_cli.measure.layer_figures import (
    EXACT_FLOAT32_NORM,
    NORM_DTYPE,
    Reducer,
    exact_norms,
    fused_norms,
    gradient_figures,
    gradient_squares,
    held_parameters,
    join_on,
    layer_type,
    median_of_sorted,
    narrow_dtype,
    owned_parameters,
    parameter_layers,
    ranked,
    stack_on,
    sum_over_processes,
    weight_figures,
)
from gradcheck_cli.measure.nonfinite import trace_nonfinite
from gradcheck_cli.measure.recurrent import StackedLayers, stacked_modules
from gradcheck_cli.measure.torch_compat import clear_frames, release_nodes

ACTIVATION_TYPES = (
    nn.Sigmoid, nn.Tanh, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.LogSigmoid, nn.Softsign,
    nn.Tanhshrink,
)  # fmt: skip
NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)  # fmt: skip
RMS_NORM = getattr(nn, "RMSNorm", None)
ALL_NORM_TYPES = NORM_TYPES + ((RMS_NORM,) if RMS_NORM else ())  # nn.RMSNorm: torch 2.4 on
# Norms whose output is unchanged when their input is scaled: a layer whose output goes straight into one has a
# scale-invariant weight, so its ||g||/||w|| does not say what a step does (issue 22). LocalResponseNorm is not.
SCALE_INVARIANT_NORMS = (
    nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
) + ((RMS_NORM,) if RMS_NORM else ())  # fmt: skip
# The largest derivative of each saturating activation: an output counts as saturated where the
# derivative is below SATURATED_DERIVATIVE of it (sigmoid |h| > 4.4, tanh |h| > 2.2): hardly any
# gradient passes there (Glorot & Bengio 2010, section 3).
PEAK_DERIVATIVE = {"Sigmoid": 0.25, "Tanh": 1.0, "Hardtanh": 1.0, "Hardsigmoid": 1.0 / 6.0, "Softsign": 1.0}
SATURATED_DERIVATIVE = 0.05
# Activations whose units can die: zero output and zero derivative for every input of the batch.
DYING = (nn.ReLU, nn.ReLU6)
# Autograd nodes that add two tensors: a skip connection when the operands crossed different numbers
# of weighted operations (x + f(x)).
_ADD_NODES = ("AddBackward0", "AddBackward1")
_CAT_NODES = ("CatBackward0",)  # torch.cat: a skip when its operands crossed different numbers of weighted ops
_MERGE_NODES = frozenset({*_ADD_NODES, *_CAT_NODES})
_ACCUMULATE_GRAD = "torch::autograd::AccumulateGrad"  # the node of a leaf tensor: its .variable
ELEMENTWISE_NODES = frozenset({*_ADD_NODES, "SubBackward0", "MulBackward0", "DivBackward0"})
# Nodes that only reshape or cast what they are given: a weight seen through one is still a parameter.
VIEW_NODES = frozenset(
    f"{name}Backward0"
    for name in (
        "T", "View", "UnsafeView", "Reshape", "ReshapeAlias", "Expand", "Permute", "Transpose", "Unsqueeze",
        "Squeeze", "Slice", "Select", "ToCopy", "Clone", "AsStrided", "Split", "SplitWithSizes", "Unbind",
        "Alias", "Narrow",
    )
) | {"SqueezeBackward1", "SqueezeBackward2", "UnsqueezeBackward1"}  # fmt: skip


# fp16's range (IEEE half): gradients below its smallest normal number flush towards zero, above its largest
# they become inf. Mixed-precision training scales the loss to keep them in between (Micikevicius et al.
# 2018); bf16 has float32's exponent range and needs no scaling.
FP16_SMALLEST_NORMAL = 6.103515625e-05
FP16_LARGEST = 65504.0
# The loss scale fp16 passes start from, halved while gradients overflow: torch.amp.GradScaler's default.
FP16_INITIAL_LOSS_SCALE = 2.0**16


@dataclass(frozen=True)
class Placement:
    """Where and in what precision a command's passes run: set once per command with ``placement()``."""

    device: torch.device | None = None  # None: wherever the model's parameters are
    amp: torch.dtype | None = None  # torch.bfloat16 or torch.float16: the passes run under autocast


_PLACEMENT: ContextVar[Placement] = ContextVar("gradcheck_placement", default=Placement())  # noqa: B039 (frozen)


@contextmanager
def placement(device: torch.device | None = None, amp: torch.dtype | None = None) -> Iterator[Placement]:
    """Run every probe inside on ``device`` (models built or loaded by gradcheck move there; batches follow
    the model) and, with ``amp``, under autocast. The user's own models are never moved."""
    token = _PLACEMENT.set(Placement(device, amp))
    try:
        yield _PLACEMENT.get()
    finally:
        _PLACEMENT.reset(token)


def current_placement() -> Placement:
    return _PLACEMENT.get()


def move_to_placement(model: nn.Module) -> None:
    """Move a model gradcheck built or loaded (never a user's object) to the command's --device."""
    device = current_placement().device
    params = list(model.parameters())
    # A model on the meta device holds no data to move: inputs.py says what to do about it.
    if device is not None and not any(p.device.type == "meta" for p in params):
        model.to(device)


def resolve_placement(device: str = "auto", amp: str | None = None) -> tuple[torch.device, torch.dtype | None]:
    """--device and --amp as torch values, or one sentence saying why this machine cannot run them."""
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise InvalidOptionError(
            "--device cuda: torch sees no CUDA device on this machine (torch.cuda.is_available() is False); "
            "use --device cpu, or auto."
        )
    chosen = torch.device("cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[amp]
    if dtype is torch.bfloat16 and chosen.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InvalidOptionError("--amp bf16: this GPU has no bfloat16 support; use --amp fp16.")
    return chosen, dtype


def describe_structure(model: nn.Module, residual: bool | None = None, skips: Skips | None = None) -> ModelStructure:
    """Read what the model is built from off its module types (cheap, no forward pass); ``skips``, read off
    the autograd graph, say whether and how often paths merge (``residual`` when they were not read)."""
    if skips is not None:
        residual = skips.merges > 0
    structure = ModelStructure(residual=residual)
    if skips is not None:
        structure.skip_merges, structure.concatenations = skips.merges, skips.concatenations
    norm_types = NORM_TYPES + ((RMS_NORM,) if RMS_NORM else ())
    for module in model.modules():
        kind = type(module).__name__
        if isinstance(module, ACTIVATION_TYPES):
            structure.activations[kind] = structure.activations.get(kind, 0) + 1
        elif isinstance(module, norm_types):
            structure.norms[kind] = structure.norms.get(kind, 0) + 1
        elif isinstance(module, nn.RNNBase):
            key = kind if not isinstance(module, nn.RNN) else f"RNN({module.nonlinearity})"
            structure.recurrent[key] = structure.recurrent.get(key, 0) + 1
        elif isinstance(module, nn.modules.conv._ConvNd):
            structure.convolutional = True
    return structure


def _cyclic_gc_paused(fn: Callable) -> Callable:
    """Run ``fn`` with Python's cyclic garbage collector paused, as timeit does, and restore its state.

    A probe keeps thousands of small objects alive while it runs (one norm, edge and record per layer and
    pass), and each 700 of them set off a collection that walks the whole process's young objects, and each
    tenth the older ones too: 17 collections and 3 ms of a 200-layer MLP's probe, an eighth of its overhead.
    Memory is still freed by reference counting; only cycles wait for the next collection after the probe.
    """

    @functools.wraps(fn)
    def paused(*args: Any, **kwargs: Any) -> Any:
        if not gc.isenabled():
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()

    return paused


@_cyclic_gc_paused
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
    """
    if passes < 1:
        raise InvalidOptionError(f"passes must be at least 1 (got {passes}); try --passes 3.")
    all_modules = list(model.named_modules())
    layers = parameter_layers(all_modules)
    # A stacked nn.LSTM/GRU/RNN is measured as its layers, a row each (recurrent.py; issue 22): not where its forward
    # cannot be replaced on the instance (see _wrappable), nor in TorchScript or across processes.
    stacked = stacked_modules(all_modules)
    local = stacked and reducer is None and _wrappable(all_modules) and not isinstance(model, torch.jit.ScriptModule)
    stacks = StackedLayers(stacked if local else [])
    layers = stacks.replace(layers)
    recorder = _Recorder(layers, reducer)
    recorder.stacks = stacks
    per_pass: list[_PassFigures] = []
    started = time.perf_counter()
    params = _unique(p for _, module in all_modules for p in module._parameters.values())  # model.parameters()
    devices = _cuda_devices(params)
    amp = current_placement().amp
    loss_scale = FP16_INITIAL_LOSS_SCALE if amp == torch.float16 else 1.0
    with ExitStack() as stack:
        stack.enter_context(torch.random.fork_rng(devices=devices))
        stack.callback(_snapshot(all_modules, params))
        # TorchScript modules take no hooks: they are measured by their parameter gradients only.
        recorder.hooked = not isinstance(model, torch.jit.ScriptModule)
        wrap = _wrappable(all_modules)
        hooks = _ForwardHooks(wrap)
        stack.callback(hooks.remove)
        for i, (_, module) in enumerate(layers if recorder.hooked else []):
            hooks.add(module, recorder.forward_hook(i))
        # Activations are watched in the first pass only (and the next, for a site whose output an in-place
        # op overwrote before it was read): its batch gives thousands of values per site, and a hook on every
        # activation of every pass would cost more than the passes themselves.
        activation_hooks = _ForwardHooks(wrap)
        stack.callback(activation_hooks.remove)
        stack.enter_context(stacks.layer_by_layer(recorder.time_probe, recorder.first_pass))  # see recurrent.py
        for module_name, module in all_modules:
            if isinstance(module, nn.RNNBase):
                if module not in stacks:
                    hooks.add(module, recorder.time_probe_hook(module_name, module), pre=True)
            elif recorder.hooked and isinstance(module, ACTIVATION_TYPES):
                recorder.hook_activation(module_name, module, activation_hooks)
        # Skips are read off the autograd graph once (also where the caller gave the structure: their count
        # says how many blocks the depth trend spans). A recurrent cell adds its input and state paths at
        # every step, which would read as skips, and TorchScript hides its ops: for those it stays unknown.
        recorder.read_skips = recorder.hooked and not any(isinstance(m, nn.RNNBase) for _, m in all_modules)
        # Every pass takes its backward by torch.autograd.grad of the layer outputs' gradient edges: the
        # backward signal and forward RMS vary from batch to batch and are taken on every pass, while the
        # parameter gradients are asked for on the first pass only and left uncomputed on the others (a
        # quarter to a third of a pass's work, and the read of every gradient). A distributed scan runs
        # .backward(): its gradient reductions live in the parameters' backward hooks.
        recorder.autograd_passes = recorder.hooked and reducer is None
        recorder.clip_grad_norm = clip_grad_norm
        if any(module.training != train_mode for _, module in all_modules):  # train() walks every module
            model.train(train_mode)
        # torch.manual_seed also seeds every accelerator backend, lazily, recording a stack trace for each:
        # a millisecond per probe. A model on the CPU needs only the CPU generator seeded.
        if all(p.is_cpu for p in params):
            torch.default_generator.manual_seed(seed)
        else:
            torch.manual_seed(seed)
        nonfinite_batch = None
        calls, first_inputs = 0, None  # the model's calls that ran, and what the first was given
        for index in range(passes):
            rng = _rng_state(devices)
            inexact = None
            while True:
                with stages.user_code(stages.INPUTS):
                    batch = make_batch(index)
                recorder.start_pass(index == 0, amp, loss_scale, inexact)
                inputs = _input_kinds(batch)
                repeated = calls + 1 if calls and inputs == first_inputs else None
                loss = _forward_backward(model, params, batch, loss_fn, recorder, amp, loss_scale, repeated)
                calls, first_inputs = calls + 1, first_inputs or inputs
                figures = recorder.finish_pass(loss, _batch_size(batch))
                if figures.finite or not math.isfinite(figures.loss) or loss_scale <= 1.0:
                    if figures.exact or inexact is not None:
                        break
                    # A float32 norm left its exact range, or a kept output changed before it was reduced: the
                    # same batch again, those norms in float64, its parameter gradients kept from this pass.
                    inexact = figures
                else:
                    loss_scale /= 2  # the scaled gradients overflowed fp16, as GradScaler would see: halve, redo
                    inexact = None
                rng()
            per_pass.append(figures)
            if not recorder.activations_pending:
                activation_hooks.remove()
            if nonfinite_batch is None and not figures.finite:
                nonfinite_batch = batch
            if progress is not None:
                progress(index + 1, passes)
        # The passes say *that* a NaN/Inf occurred; one more pass with every module watched says where.
        origin = trace_nonfinite(model, nonfinite_batch, loss_fn) if nonfinite_batch is not None else None
    seconds = time.perf_counter() - started
    if structure is None:
        structure = describe_structure(model, skips=recorder.skips)
    elif recorder.skips is not None and structure.skip_merges is None:
        structure = replace(structure, skip_merges=recorder.skips.merges)
    result = _assemble(model, params, name, recorder, per_pass, passes, seed, seconds, structure)
    result.nonfinite_origin = origin
    if amp is not None:
        result.amp = str(amp).replace("torch.", "")
        result.loss_scale = loss_scale
    return result


def _gradient_edge(tensor: torch.Tensor) -> GradientEdge:
    """get_gradient_edge, without its checks where the tensor is the output of a built-in op (a layer's
    output almost always is): a microsecond or two per output, which a deep narrow model feels."""
    node = tensor.grad_fn
    if node is None or isinstance(node, torch._C._FunctionBase):  # a leaf, or a custom autograd.Function
        return get_gradient_edge(tensor)
    return GradientEdge(node, tensor.output_nr)


@functools.cache
def _all_but(rank: int, dim: int) -> tuple[int, ...]:
    return tuple(d for d in range(rank) if d != dim)


class _ForwardHooks:
    """Forward hooks and pre-hooks on many modules, added and removed together.

    A hook after the forward wraps the module's ``forward`` on the instance: the module's ``__call__`` then
    takes its path without hooks and calls the wrapper (1.3 us a call, against 2.6 for the path with hooks,
    which a 200-layer net with an activation after each layer calls 800 times a probe). The wrapper sees what
    a hook registered last would: the module's positional arguments and its output. Where that could differ,
    the hook goes into the module's hook dict instead (``wrap=False`` for the whole model, see probe_model;
    and a module with forward hooks of its own, which may replace the output the wrapper sees). Pre-hooks go
    into the dicts too. Both skip ``register_forward_hook``'s RemovableHandle with its weak references: 3.5 us
    a hook added and removed. Hooks in the dicts take ids from the counter those handles take theirs from, so
    they run exactly as registered hooks do. Sets are removed in the reverse order they were added in (a
    module may be wrapped by two: a PReLU is a layer and an activation).
    """

    def __init__(self, wrap: bool) -> None:
        self._wrap = wrap
        self._added: list[tuple[dict, int]] = []
        self._wrapped: list[tuple[nn.Module, Any]] = []  # (module, the instance's own forward or _NO_FORWARD)

    def add(self, module: nn.Module, hook: Callable, *, pre: bool = False) -> None:
        if pre or not self._wrap or module._forward_hooks:
            hooks = module._forward_pre_hooks if pre else module._forward_hooks
            key = RemovableHandle.next_id
            RemovableHandle.next_id += 1
            hooks[key] = hook
            self._added.append((hooks, key))
            return
        forward = module.forward

        def watched(*args: Any, **kwargs: Any) -> Any:
            output = forward(*args, **kwargs)
            hook(module, args, output)
            return output

        self._wrapped.append((module, module.__dict__.get("forward", _NO_FORWARD)))
        module.__dict__["forward"] = watched

    def remove(self) -> None:
        for hooks, key in self._added:
            hooks.pop(key, None)
        for module, own in reversed(self._wrapped):
            if own is _NO_FORWARD:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = own
        self._added, self._wrapped = [], []


_NO_FORWARD = object()  # a module whose forward is its class's, with none of its own set on the instance


def _wrappable(modules: list[tuple[str, nn.Module]]) -> bool:
    """Whether the probe may wrap the modules' forward (see _ForwardHooks): not where nn.DataParallel copies each
    module's attributes into replicas (the wrapper would run the original), nor where global forward hooks
    run after every forward (and may replace an output the wrapper sees)."""
    global_hooks = nn.modules.module._global_forward_hooks
    return not global_hooks and not any(isinstance(m, nn.DataParallel) for _, m in modules)


def _cuda_devices(params: list[nn.Parameter]) -> list[int]:
    return sorted({p.get_device() for p in params if p.is_cuda})  # (p.device builds a torch.device each)


def _rng_state(devices: list[int]) -> Callable[[], None]:
    """The global RNG state now, as the function that puts it back (to draw a pass's batch again)."""
    cpu = torch.get_rng_state()
    cuda = [torch.cuda.get_rng_state(d) for d in devices]

    def restore() -> None:
        torch.set_rng_state(cpu)
        for device, state in zip(devices, cuda):
            torch.cuda.set_rng_state(state, device)

    return restore


def _unique(tensors: Iterator[torch.Tensor | None]) -> list[torch.Tensor]:
    """Each tensor once, in order, as model.parameters() and model.buffers() give them: read off the modules
    already listed, where each of those walks the module tree again (a millisecond on a 1000-layer model)."""
    seen: set[int] = set()
    out = []
    for tensor in tensors:
        if tensor is not None and id(tensor) not in seen:
            seen.add(id(tensor))
            out.append(tensor)
    return out


def _snapshot(modules: list[tuple[str, nn.Module]], params: list[nn.Parameter]) -> Callable[[], None]:
    """Record what a probe may change and return the function that puts it back. ``modules``: the model's
    named_modules()."""
    modes = [(m, m.training) for _, m in modules]
    grads = [p.grad for p in params]
    buffers = [(b, b.detach().clone()) for b in _unique(b for _, m in modules for b in m._buffers.values())]
    for p in params:
        p.grad = None  # the probe's gradients must not accumulate into the user's

    def restore() -> None:
        for module, training in modes:
            if module.training != training:  # nn.Module.__setattr__ is slow enough to matter on big models
                module.training = training
        for p, g in zip(params, grads):
            p.grad = g
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)

    return restore


def _forward_backward(
    model: nn.Module,
    params: list[nn.Parameter],
    batch: Batch,
    loss_fn: LossFn,
    recorder: _Recorder,
    amp: torch.dtype | None = None,
    loss_scale: float = 1.0,
    repeated: int | None = None,
) -> torch.Tensor:
    """One pass; ``repeated``: the number of this call of the model where an earlier call ran with inputs of the
    same shapes (a failure then is the model's state, not its inputs: RepeatCallError)."""
    batch = batch_on_device(batch, params)
    stage = stages.FORWARD
    output = loss = scaled = None
    stages.enter(stage)
    try:
        with torch.autocast(params[0].device.type, dtype=amp) if amp is not None and params else nullcontext():
            output = model(*batch.args, **batch.kwargs)
            stage = stages.LOSS
            stages.enter(stage)
            loss = loss_fn(output, batch)
        recorder.reduce_kept_activations()  # before the backward frees them
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ModelRunError("The loss must be a single-element tensor; check the loss function.", stage)
        if not loss.requires_grad:
            raise ModelRunError(_cut_graph_message(output, params), stage)
        if recorder.read_skips:
            recorder.skips = read_skips(loss, recorder.graph_nodes)  # before backward frees the graph
            recorder.read_skips = False
        stage = stages.BACKWARD
        stages.enter(stage)
        scaled = loss * loss_scale if loss_scale != 1.0 else loss
        if recorder.autograd_passes:
            recorder.take_gradients(scaled)
        else:
            for p in params:
                p.grad = None
            scaled.backward()
        value = loss.detach()
    except GradcheckError as error:
        clear_frames(error)  # (one the loss function raised about the user's code holds the graph too)
        raise
    except SystemExit as error:  # sys.exit() in the user's forward or loss: never a passing scan
        clear_frames(error)
        raise stages.exit_error(error, stage) from error
    except Exception as error:  # the user's code: say where it failed, keep the original as the cause
        layer = _failing_layer(model, error) if stage == "forward pass" else None
        if layer is not None:
            where = f" in layer {layer}"
        else:
            ran = recorder.layers_run()
            where = f" after running {', '.join(ran[-3:])}" if ran else ""
        clear_frames(error)
        detail = describe_exception(error)
        if repeated is not None:
            raise RepeatCallError(
                f"The model failed in the {stage}{where} on pass {repeated}, after pass 1 succeeded with inputs of "
                f"the same shapes ({detail}), so it keeps state between calls; check what its forward stores, counts "
                "or asserts from one call to the next (a scan runs it once per pass).",
                stage,
                layer,
            ) from error
        raise ModelRunError(f"The model failed in the {stage}{where}: {detail}", stage, layer) from error
    finally:
        # The graph's roots go first, then the nodes the probe read from Python, from the root end: freed the
        # other way round, a deep model's graph overflows the C stack (see release_nodes).
        output = loss = scaled = None
        recorder.release_graph()
    return value


def _input_kinds(batch: Batch) -> list[tuple[torch.Size, torch.dtype]]:
    return [(t.shape, t.dtype) for t in tensors_in((batch.args, batch.kwargs))]


def _cut_graph_message(output: Any, params: list[nn.Parameter]) -> str:
    """Why the loss carries no gradient: frozen parameters, or where the graph from them to the loss was cut."""
    if not any(p.requires_grad for p in params):
        return (
            "The loss does not depend on any parameter that requires grad; unfreeze the model "
            "(model.requires_grad_(True)) or check the loss function."
        )
    if any(t.requires_grad for t in tensors_in(output)):
        return (
            "The model's output depends on its parameters but the loss computed from it does not: the loss function "
            "cuts the graph (.detach(), .item(), .numpy() or torch.no_grad()); compute the loss with torch operations "
            "on the output."
        )
    return (
        "The model's parameters require grad, but its output does not depend on them through autograd: its forward "
        "cuts the graph (.detach(), torch.no_grad(), .item() or .numpy() on the way to the output); return a tensor "
        "computed from the parameters by torch operations."
    )


def batch_on_device(batch: Batch, params: list[nn.Parameter]) -> Batch:
    """The batch on the model's device: presets and inferred inputs are drawn on the CPU."""
    device = params[0].device if params else None
    if device is None or not _any_tensor(batch, lambda t: t.device != device):
        return batch
    return Batch(_moved(batch.args, device), _moved(batch.kwargs, device), _moved(batch.target, device), batch.size)


def _any_tensor(batch: Batch, test: Callable[[torch.Tensor], bool]) -> bool:
    return any(test(t) for t in tensors_in((batch.args, batch.kwargs, batch.target)))


def _moved(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        moved = [_moved(v, device) for v in value]
        return tuple(moved) if isinstance(value, tuple) else moved
    if isinstance(value, dict):
        return {k: _moved(v, device) for k, v in value.items()}
    return value


def _failing_layer(model: nn.Module, error: BaseException) -> str | None:
    """The innermost module whose forward was on the stack when ``error`` was raised, as
    "name (Type)"; read off the traceback, so no hook is needed on the hot path."""
    names = {id(module): name for name, module in model.named_modules()}
    innermost = None
    tb = error.__traceback__
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, nn.Module) and id(candidate) in names:
            innermost = candidate
        tb = tb.tb_next
    if innermost is None:
        return None
    return f"{names[id(innermost)] or '(model)'} ({layer_type(innermost)})"


def _carries_grad(args: tuple) -> bool:
    """Whether a module's inputs carry a gradient (a tensor that requires grad)."""
    if len(args) == 1 and type(args[0]) is torch.Tensor:
        return args[0].requires_grad
    return any(t.requires_grad for t in tensors_in(args))


def _starts_path(args: tuple) -> bool:
    """Whether a layer's positional inputs are tensors none of which carries a gradient history: it reads the
    model's inputs (or something computed from them without parameters). No tensor given: unknown, False."""
    tensors = list(tensors_in(args))
    return bool(tensors) and not any(t.requires_grad for t in tensors)


def _batch_size(batch: Batch) -> int:
    if batch.size is not None:
        return batch.size
    for value in tensors_in((batch.args, batch.kwargs)):
        if value.dim() > 0:
            return int(value.shape[0])
    return 1


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside nested tuples, lists and dicts (module outputs are often tuples)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)


@dataclass
class _PassFigures:
    forward_sq: list[float]  # per layer: sum of squares of its outputs over all calls
    forward_numel: list[int]
    backward_sq: list[float]
    backward_seen: list[bool]
    weight_grad_sq: list[float | None]
    other_grad_sq: list[float | None]
    grad_nonfinite: list[bool]
    time_steps: dict[str, list[float]]
    loss: float
    total_grad_norm: float | None  # None on a signal pass (no parameter gradients)
    batch_size: int
    # False when a norm taken in float32 left the range where float32 is exact: the pass is measured again
    exact: bool = True
    # --amp: per layer, (output-gradient elements below fp16's normal range, above its largest, all of them)
    fp16_counts: dict[int, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def finite(self) -> bool:
        total = () if self.total_grad_norm is None else (self.total_grad_norm,)
        sums = (self.loss, *total, *self.forward_sq, *self.backward_sq)
        return all(math.isfinite(value) for value in sums)


@dataclass
class _ActivationSite:
    index: int
    name: str
    call: int  # which call of the module in a pass (a shared activation module is called per layer)
    type: str
    after: str | None
    unit_dim: int
    units: int  # channels or features: what can die as a whole
    dying: bool  # a ReLU-like type: its units can die, so their activity is counted
    # the dimensions a per-unit sum reduces, for inputs of the site's first rank
    reduce_dims: tuple[int, ...] = ()


@dataclass
class _ActivationPass:
    """One pass's figures for the activation sites, kept on the device until the probe ends, in blocks of
    sites reduced together: (site indices, one row per site)."""

    unit_sums: list[tuple[list[int], torch.Tensor]] = field(default_factory=list)  # per-unit sums of phi'^2
    saturated: list[tuple[list[int], torch.Tensor]] = field(default_factory=list)  # sum of sign(bound - phi'^2)
    numel: dict[int, int] = field(default_factory=dict)  # site: values seen


class _Recorder:
    """Hook bodies kept minimal: each appends one reduction; the host sees a pass's reductions at once.

    Norms of outputs and output gradients are taken in float32 where that is exact and in float64 where it
    would not be. A pass where a float32 norm falls outside EXACT_FLOAT32_NORM (a vanishing model's first
    pass) is measured again with those norms in float64 and without its parameter gradients (read exactly the
    first time), and the next passes take in float64 the norms whose last value lay outside SAFE_FLOAT32_NORM:
    a healthy model pays no float64 at all, a sick one a pass without parameter gradients.

    Float32 norms of small tensors are batched: a hook only keeps the tensor, and one fused ``_foreach_norm``
    reduces those kept each time they reach DEFER_BYTES and when the pass ends, so a deep narrow net pays one
    call per few dozen layers, not one per layer; output gradients come back together from
    torch.autograd.grad. A tensor of LARGE_NUMEL elements or more is reduced at once instead, while it is in
    cache, and its output's gradient in a hook on the tensor, so that the backward frees or reuses the
    gradient as it would without the probe.
    A kept tensor must not change before it is reduced: the first pass takes its outputs' norms at once and
    notes the outputs an in-place op overwrites (BatchNorm then ReLU(inplace=True)), which are reduced at
    once from then on, and every kept tensor's version counter is checked when it is reduced; a pass where
    one changed is measured again.
    """

    _FORWARD, _BACKWARD = 0, 1

    def __init__(self, layers: list[tuple[str, nn.Module]], reducer: Reducer | None = None):
        self.layers = layers
        self.reducer = reducer
        self.order: list[int] = []  # layer indices in first-execution order
        self._batched = [False] * len(layers)  # see start_pass
        self._seen: set[int] = set()
        self.calls = [0] * len(layers)
        self._numel = [0] * len(layers)
        self._narrow: list[torch.Tensor] = []  # float32 norms, and the (slot, layer) each belongs to
        self._narrow_slots: list[tuple[int, int]] = []
        self._wide: list[torch.Tensor] = []  # float64 norms
        self._wide_slots: list[tuple[int, int]] = []
        self._first = True
        self._inexact: _PassFigures | None = None  # see start_pass
        # Passes take their backward by torch.autograd.grad: the forward hooks keep the outputs' gradient edges,
        # and autograd.grad takes their gradients, with the parameters' on the first pass only (see
        # probe_model). False for a distributed scan, whose passes run .backward() and are read off .grad.
        self.autograd_passes = False
        self._param_grads: tuple[torch.Tensor | None, ...] = ()  # autograd.grad's, in _read_params' order
        self.clip_grad_norm: float | None = None
        # (layer, gradient edge of an output) whose gradient autograd.grad returns: the edge, not the tensor,
        # so the backward frees each output as it would without the probe
        self._edges: list[tuple[int, GradientEdge]] = []
        # Outputs of LARGE_NUMEL elements or more are measured by a hook on the tensor instead: autograd.grad
        # would keep each one's gradient until it returns, where the backward frees or reuses it at once.
        # (layer, edge, whether the layer's input carries a gradient): autograd.grad is asked for the edges
        # of those whose input does not (where the backward signal starts) so that the backward reaches the
        # others, and for those it did not reach on an earlier pass (_reach_layers).
        self._hooked: list[tuple[int, GradientEdge, bool]] = []
        # Other autograd nodes read this pass (the skip walk's, hooked outputs' of .backward() passes): held with
        # the edges' until the graph's roots are gone (release_graph).
        self.graph_nodes: list[Any] = []
        self._fired: set[int] = set()  # layers whose hooked output gradient arrived this pass
        self._reach_layers: set[int] = set()
        self._wide_keys: set[tuple[int, int]] = set()  # slots whose last value was too small or large for float32
        self._immediate_keys: set[tuple[int, int]] = set()  # outputs an in-place op overwrites: reduced at once
        self._kept: list[tuple[tuple[int, int], torch.Tensor, int]] = []  # (slot, tensor, its version) to reduce
        self._kept_bytes = 0
        self._overwritten = False  # a kept tensor changed before it was reduced: the pass is measured again
        self._last_output: tuple[tuple[int, int], torch.Tensor, int] | None = None
        self._backward_keys = [(self._BACKWARD, index) for index in range(len(layers))]
        self._backward_hooks = [self._make_backward_hook(index) for index in range(len(layers))]
        self._amp: torch.dtype | None = None
        self._loss_scale = 1.0
        self._range_counts: list[tuple[int, torch.Tensor]] = []  # --amp: (layer, see _count_fp16_range)
        self._range_bounds: tuple[torch.Tensor, ...] | None = None  # see _count_fp16_range
        self._time_probes: list[tuple[str, torch.Tensor, int]] = []
        self.recurrent_types: dict[str, str] = {}
        self.stacks = StackedLayers([])  # the stacked recurrent modules measured layer by layer (probe_model)
        self.hooked = True
        self._owned: list[tuple[int, bool, nn.Parameter]] | None = None
        # A loss can reach a layer in some batches only (hard-negative mining, masked tokens; issue 22): the later
        # passes read again the parameter gradients of the layers that got exactly zero on the first.
        self._rechecked: list[tuple[int, bool, nn.Parameter]] = []
        self.nonzero_grad: set[int] = set()  # layers a pass gave a finite, nonzero parameter gradient
        self.read_skips = False
        self.skips: Skips | None = None  # None: not read (given a structure, TorchScript, recurrent)
        self._last_layer: int | None = None  # the layer with weights that ran last (what an activation follows)
        # (layer, weak reference to its output) of the last layer hooked on the first pass, and layer -> the
        # scale-invariant norm layer that took that output as its input (see _note_normalized_input)
        self._previous_output: tuple[int, weakref.ref] | None = None
        self.normalized_by: dict[int, int] = {}
        # Layers whose first call's input carried no gradient history: each begins a path from the model's
        # inputs (a stem, an embedding, a decoder's token embedding), so the depth trend does not run across it.
        self.path_starts: set[int] = set()
        # Activations, one site per (module, call in the pass): a shared nn.ReLU used after every layer
        # is measured after each of them.
        self.activation_sites: list[_ActivationSite] = []
        self.activation_passes: list[_ActivationPass] = []
        self._activation_pass = _ActivationPass()
        self._site_index: dict[tuple[str, int], int] = {}
        self._activation_calls: dict[str, int] = {}
        # Activation outputs kept until the forward pass ends, to be reduced together: (site, output, its
        # version, closed form of phi'^2). Sites whose output an in-place op overwrote before then are
        # reduced in their hook, and watched one more pass.
        self._kept_activations: list[tuple[_ActivationSite, torch.Tensor, int, Callable]] = []
        self._kept_activation_bytes = 0
        self._immediate_sites: set[int] = set()
        self.activations_pending = False

    def start_pass(
        self,
        first: bool,
        amp: torch.dtype | None = None,
        loss_scale: float = 1.0,
        inexact: _PassFigures | None = None,
    ) -> None:
        """``first``: the first pass, whose output norms are taken in their hooks while it notes which outputs
        in-place ops overwrite, and which reads the parameter gradients.
        ``amp``: the passes run under autocast, so output gradients are also sorted into fp16's ranges;
        ``loss_scale``: what the loss was multiplied by, divided out of every gradient figure.
        ``inexact``: this batch's figures from a pass that was not exact, measured again: the norms that left
        float32's range there are taken in float64 (_plan_precision has marked them), and its parameter-gradient
        figures, exact already (exact_norms), are kept rather than computed again."""
        self._narrow, self._narrow_slots, self._wide, self._wide_slots = [], [], [], []
        self._first, self._inexact = first, inexact
        self._param_grads = ()
        self._edges, self._hooked, self._fired = [], [], set()
        self._kept, self._kept_bytes, self._overwritten, self._last_output = [], 0, False, None
        self._amp, self._loss_scale, self._range_counts, self._range_bounds = amp, loss_scale, [], None
        self._numel = [0] * len(self.layers)
        self._time_probes = []
        self.calls = [0] * len(self.layers)
        self._activation_calls = {}
        # Layers whose output this pass keeps for a batched norm, unless it is large (_record's last case).
        if self.autograd_passes and not first:
            seen = self._seen
            unbatched = {index for slot, index in (*self._wide_keys, *self._immediate_keys) if slot == self._FORWARD}
            self._batched = [index in seen and index not in unbatched for index in range(len(self.layers))]
        else:
            self._batched = [False] * len(self.layers)
        self._activation_pass = _ActivationPass()
        self._kept_activations, self._kept_activation_bytes = [], 0
        self.activations_pending = False
        self._last_layer = None
        self._previous_output = None

    def ranked(self) -> list[int]:
        """Layer indices in execution order, then the layers that never ran in definition order."""
        return ranked(self.order, len(self.layers))

    def layers_run(self) -> list[str]:
        return [self.layers[i][0] or "(model)" for i in self.order]

    def forward_hook(self, index: int) -> Callable:
        key = (self._FORWARD, index)
        backward_hook = self._backward_hooks[index]

        # Runs once per layer per pass: kept to the few operations every output needs. The common case, one
        # small output of a layer that ran before, on a pass that batches its norms (see start_pass), takes the
        # short path: a 200-layer narrow net calls this 600 times a probe.
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.calls[index] += 1
            self._last_layer = index
            if (
                self._batched[index]
                and type(output) is torch.Tensor
                and output.requires_grad
                and output.numel() < LARGE_NUMEL
                and output.is_floating_point()
            ):
                self._numel[index] += output.numel()
                self._keep(key, output.detach())
                self._edges.append((index, _gradient_edge(output)))
                return
            if index not in self._seen:
                self._seen.add(index)
                self.order.append(index)
            if self._first:
                self._note_normalized_input(index, module, args, output)
                if self.calls[index] == 1 and _starts_path(args):
                    self.path_starts.add(index)
            if self._last_output is not None:
                self._note_overwrite()
            for tensor in (output,) if type(output) is torch.Tensor else tensors_in(output):
                if not tensor.is_floating_point():
                    continue
                self._record(key, tensor.detach())
                self._numel[index] += tensor.numel()
                if not tensor.requires_grad:
                    continue
                if not self.autograd_passes:
                    tensor.register_hook(backward_hook)
                    self.graph_nodes.append(tensor.grad_fn)
                elif key in self._immediate_keys or tensor.numel() >= LARGE_NUMEL:
                    # (a hook on the tensor sees the gradient of this version, before any in-place op on it)
                    tensor.register_hook(backward_hook)
                    self._hooked.append((index, _gradient_edge(tensor), _carries_grad(args)))
                else:
                    self._edges.append((index, _gradient_edge(tensor)))

        return hook

    def _note_normalized_input(self, index: int, module: nn.Module, args: Any, output: Any) -> None:
        """Whether this norm layer's input is the very tensor the layer hooked before it returned: then that
        layer's output feeds the norm directly (read off the tensors, not the module names)."""
        previous = self._previous_output
        if previous is not None and isinstance(module, SCALE_INVARIANT_NORMS) and args and args[0] is previous[1]():
            self.normalized_by.setdefault(previous[0], index)
        self._previous_output = (index, weakref.ref(output)) if isinstance(output, torch.Tensor) else None

    def _read_params(self) -> list[tuple[int, bool, nn.Parameter]]:
        """(owning layer, is-a-weight, parameter) of the parameters whose gradients this pass reads: all on
        the first pass (all passes when no hook shows anything else); on the others, those of the layers whose
        gradient was exactly zero on the first (see _note_nonzero_gradients), none where there are none."""
        if self.hooked and (not self._first or self._inexact is not None):
            return self._rechecked if not self._first and self._inexact is None else []
        if self._owned is None:  # the layers' order is known once the first forward pass has run
            self._owned = owned_parameters(self.layers, self.ranked())
        return self._owned

    def take_gradients(self, loss: torch.Tensor) -> None:
        """A pass's backward: the gradients of the outputs' edges (and of the recurrent time probes) by
        torch.autograd.grad, with the parameters' on the first pass. Without parameters it runs only the part
        of the backward graph that leads to the outputs, so the pass costs less than a training step's; with
        them it costs what .backward() does, without a Python hook per output or a write to any .grad."""
        edges = [edge for _, edge in self._edges]
        probes = [probe for _, probe, _ in self._time_probes]
        params = [p for _, _, p in self._read_params()]
        reach = [edge for index, edge, carried in self._hooked if not carried or index in self._reach_layers]
        if not edges and not probes and not params and not reach:
            reach = [edge for _, edge, _ in self._hooked]
        inputs = [*edges, *probes, *params, *reach]
        if not inputs:
            return
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        for (index, _), grad in zip(self._edges, grads):
            if grad is not None:
                self._record_gradient(index, grad)
        for probe, grad in zip(probes, grads[len(edges) :]):
            probe.grad = grad
        self._param_grads = grads[len(edges) + len(probes) : len(edges) + len(probes) + len(params)]
        # A hooked output the backward did not reach (its input's gradient comes from elsewhere than a layer,
        # or it does not reach the loss): its edge is asked for from the next pass on.
        self._reach_layers.update(index for index, _, _ in self._hooked if index not in self._fired)

    def release_graph(self) -> None:
        """Let go of the autograd nodes this pass read (see release_nodes): once the graph's roots are gone."""
        nodes = [edge.node for _, edge in self._edges]
        nodes += [edge.node for _, edge, _ in self._hooked]
        nodes += self.graph_nodes
        self._edges, self._hooked, self.graph_nodes = [], [], []
        release_nodes(nodes)

    def _make_backward_hook(self, index: int) -> Callable:
        def hook(grad: torch.Tensor) -> None:
            self._fired.add(index)
            self._record_gradient(index, grad)

        return hook

    def _record_gradient(self, index: int, grad: torch.Tensor) -> None:
        self._record(self._backward_keys[index], grad)
        if self._amp is not None:
            self._count_fp16_range(index, grad)

    def _note_overwrite(self) -> None:
        """First pass: whether an in-place op overwrote the last output seen since its hook (the next hook
        to run is the first chance to tell); such outputs are reduced in their hook from then on."""
        if self._last_output is not None:
            key, tensor, version = self._last_output
            if tensor._version != version:
                self._immediate_keys.add(key)
            self._last_output = None

    def _count_fp16_range(self, index: int, grad: torch.Tensor) -> None:
        """Count the gradient's elements above each of: -inf (all but NaN), zero, fp16's smallest normal
        (scaled: at or below it, lost without loss scaling) and its largest (inf in fp16); _unpack tells the
        ranges apart. Exact integer counts, left on the device: torch.bincount would read the largest bucket
        back to the host first on CUDA, a sync per layer (and a count per bound is faster on the CPU too)."""
        if self._range_bounds is None or self._range_bounds[0].device != grad.device:
            bounds = [-math.inf, 0.0, FP16_SMALLEST_NORMAL * self._loss_scale, FP16_LARGEST * self._loss_scale]
            self._range_bounds = torch.tensor(bounds, device=grad.device).unbind()
        magnitudes = grad.detach().abs().float()  # in float32: 65504 times the loss scale is inf in float16
        counts = torch.stack([torch.count_nonzero(magnitudes > bound) for bound in self._range_bounds])
        self._range_counts.append((index, counts))

    def _record(self, key: tuple[int, int], tensor: torch.Tensor) -> None:
        """``key``: (slot, layer index)."""
        if key in self._wide_keys:
            self._wide.append(torch.linalg.vector_norm(tensor, dtype=torch.float64))
            self._wide_slots.append(key)
        elif (self._first and key[0] == self._FORWARD) or key in self._immediate_keys or tensor.numel() >= LARGE_NUMEL:
            self._narrow.append(torch.linalg.vector_norm(tensor, dtype=narrow_dtype(tensor)))
            self._narrow_slots.append(key)
        else:
            self._keep(key, tensor)
        if self._first and key[0] == self._FORWARD:
            self._last_output = (key, tensor, tensor._version)

    def _keep(self, key: tuple[int, int], tensor: torch.Tensor) -> None:
        """Keep a small tensor for a batched float32 norm, reduced with others every DEFER_BYTES."""
        self._kept.append((key, tensor, tensor._version))
        self._kept_bytes += tensor.numel() * tensor.element_size()
        if self._kept_bytes > DEFER_BYTES:
            self._reduce_kept()

    def _reduce_kept(self) -> None:
        """The kept tensors' float32 norms, in one fused call per dtype."""
        if not self._kept:
            return
        for key, tensor, version in self._kept:
            if tensor._version != version:
                self._overwritten = True
                self._immediate_keys.add(key)
        self._narrow.extend(fused_norms([tensor for _, tensor, _ in self._kept]))
        self._narrow_slots.extend(key for key, _, _ in self._kept)
        self._kept, self._kept_bytes = [], 0

    def time_probe_hook(self, name: str, module: nn.RNNBase) -> Callable:
        """Add a zero tensor that requires grad to the sequence input: its gradient is dL/dx_t for
        every step t, measured without cutting the graph to the layers below."""
        self.recurrent_types[name] = type(module).__name__

        def hook(mod: nn.Module, args: tuple) -> tuple | None:
            if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
                return None  # PackedSequence and friends: no per-step probe
            sequence = args[0]
            probe = torch.zeros_like(sequence, requires_grad=True)
            time_dim = 1 if (mod.batch_first and sequence.dim() == 3) else 0
            self._time_probes.append((name, probe, time_dim))
            return (sequence + probe, *args[1:])

        return hook

    def first_pass(self) -> bool:
        return self._first

    def time_probe(self, name: str, probe: torch.Tensor, time_dim: int) -> None:
        """A layer of a stacked recurrent module: ``probe``'s gradient is its gradient through time (recurrent.py)."""
        self.recurrent_types.setdefault(name, type(self.stacks.layer(name)[0]).__name__)
        self._time_probes.append((name, probe, time_dim))

    def hook_activation(self, name: str, module: nn.Module, hooks: _ForwardHooks) -> None:
        """Measure the squared derivative phi'(h)^2 on every element: in closed form from the output for
        the common types (one or two elementwise ops, right for in-place ones too), else by autograd on a
        copy of the input, taken before an in-place activation overwrites it.

        Outputs are kept and reduced together when the forward pass ends or they reach ACTIVATION_BATCH_BYTES
        (see reduce_kept_activations): a deep narrow net would otherwise pay three small ops per site, more than the hook
        itself costs."""
        closed_form = _squared_derivative_from_output(module)
        if closed_form is not None:

            def from_output(mod: nn.Module, args: tuple, output: Any) -> None:
                if isinstance(output, torch.Tensor) and output.is_floating_point() and output.numel():
                    site = self._activation_site(name, mod, output)
                    # (detached, so no graph is built: no torch.no_grad() needed, which costs as much)
                    kept = (site, output.detach(), output._version, closed_form)
                    if site.index in self._immediate_sites:
                        self._reduce_activations([kept])
                        return
                    self._kept_activations.append(kept)
                    self._kept_activation_bytes += output.numel() * output.element_size()
                    if self._kept_activation_bytes > ACTIVATION_BATCH_BYTES:
                        self.reduce_kept_activations()

            hooks.add(module, from_output)
            return

        def from_input(mod: nn.Module, args: tuple) -> None:
            derivative = _derivative_by_autograd(mod, args)
            if derivative is not None and derivative.numel():
                site = self._activation_site(name, mod, args[0])
                self._reduce_activations([(site, derivative, derivative._version, _squared)])

        hooks.add(module, from_input, pre=True)

    def _activation_site(self, name: str, module: nn.Module, values: torch.Tensor) -> _ActivationSite:
        """The site of this call of an activation module, with the values it sees counted."""
        if self._last_output is not None:
            self._note_overwrite()  # an in-place activation has just overwritten the output before it
        call = self._activation_calls.get(name, 0)
        self._activation_calls[name] = call + 1
        site = self._site(name, module, call, values)
        numel = self._activation_pass.numel
        numel[site.index] = numel.get(site.index, 0) + values.numel()
        return site

    def reduce_kept_activations(self) -> None:
        """Reduce the activation outputs kept so far: when the forward pass ends or they reach
        ACTIVATION_BATCH_BYTES."""
        if self._kept_activations:
            kept, self._kept_activations, self._kept_activation_bytes = self._kept_activations, [], 0
            self._reduce_activations(kept)

    def _reduce_activations(self, kept: list[tuple[_ActivationSite, torch.Tensor, int, Callable]]) -> None:
        """Per-unit sums of phi'^2 (one reduction gives both E[phi'^2] and, for ReLUs, which units were ever
        active) and, for saturating types, the saturated count: sites of one shape stacked, a few ops each.

        An output changed since its hook (an in-place op after the activation) is not counted this pass:
        its site is reduced in its hook from the next pass on, which keeps the activation hooks."""
        groups: dict[tuple, list[tuple[_ActivationSite, torch.Tensor]]] = {}
        records = self._activation_pass
        for site, values, version, closed_form in kept:
            if values._version != version:
                self._immediate_sites.add(site.index)
                self.activations_pending = True
                records.numel[site.index] -= values.numel()
                continue
            rank = values.dim()
            # A shape the site has not seen (its units cannot be told apart) is summed whole: reduce=None.
            if rank > 1 and values.shape[site.unit_dim] == site.units:
                reduce = site.reduce_dims if len(site.reduce_dims) == rank - 1 else _all_but(rank, site.unit_dim)
            else:
                reduce = None
            key = (closed_form, PEAK_DERIVATIVE.get(site.type), values.shape, values.dtype, values.device, reduce)
            groups.setdefault(key, []).append((site, values))
        for (closed_form, peak, shape, _, _, reduce), members in groups.items():
            indices = [site.index for site, _ in members]
            # one row per site (a copy of about ACTIVATION_BATCH_BYTES at most; a lone site is a view)
            stacked = torch.stack([v for _, v in members]) if len(members) > 1 else members[0][1].unsqueeze(0)
            squared = closed_form(stacked)
            rows = range(1, len(shape) + 1)
            if reduce is None:
                sums = torch.sum(squared, dim=list(rows), dtype=torch.float32).unsqueeze(1)
            else:
                sums = torch.sum(squared, dim=[d + 1 for d in reduce], dtype=torch.float32)
            records.unit_sums.append((indices, sums))
            if peak is not None:
                # count of phi'^2 below the bound, as (n + sum(sign(bound - phi'^2))) / 2: a sign and a sum
                # are several times faster than summing a boolean mask
                bound = (SATURATED_DERIVATIVE * peak) ** 2
                counts = torch.sum(torch.sign(bound - squared), dim=list(rows), dtype=torch.float32)
                records.saturated.append((indices, counts))

    def _site(self, name: str, module: nn.Module, call: int, h: torch.Tensor) -> _ActivationSite:
        key = (name, call)
        if key not in self._site_index:
            after = self.layers[self._last_layer] if self._last_layer is not None else None
            # Units are channels (dim 1) of a convolution's map, else the features (last dim).
            conv_after = after is not None and isinstance(
                after[1], (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)
            )
            rank = h.dim()
            unit_dim = 1 if rank >= 3 and (rank >= 4 or conv_after) else rank - 1
            units = int(h.shape[unit_dim]) if rank > 1 else 0
            self._site_index[key] = len(self.activation_sites)
            self.activation_sites.append(
                _ActivationSite(
                    len(self.activation_sites),
                    name or "(model)",
                    call,
                    type(module).__name__,
                    after[0] if after else None,
                    unit_dim,
                    units,
                    isinstance(module, DYING),
                    _all_but(rank, unit_dim),
                )  # fmt: skip
            )
        return self.activation_sites[self._site_index[key]]

    def finish_pass(self, loss: torch.Tensor, batch_size: int) -> _PassFigures:
        self._note_overwrite()
        self._reduce_kept()
        params = self._read_params()
        grads = list(self._param_grads) if self.autograd_passes else [p.grad for _, _, p in params]
        present = [g for g in grads if g is not None]
        if self.reducer is not None:  # this process's shard of each gradient
            present = [self.reducer.local(g) for g in present]
        # Parameter gradients hold most of the elements: one fused float32 norm each, taken again in float64
        # only where the result says float32 was not exact (see exact_norms).
        norms = fused_norms(present)
        steps = [
            probe.grad.to(NORM_DTYPE).pow(2).sum(dim=[d for d in range(probe.dim()) if d != time_dim])
            for _, probe, time_dim in self._time_probes
            if probe.grad is not None
        ]
        narrow = [*self._narrow, *norms]
        wide = [*self._wide, loss.detach().reshape(()).to(NORM_DTYPE)]
        device = wide[-1].device
        parts = [stack_on(narrow, device).to(NORM_DTYPE)] if narrow else []
        if self._range_counts:
            parts_after = [stack_on([c for _, c in self._range_counts], device).to(NORM_DTYPE).flatten()]
        else:
            parts_after = []
        flat = torch.cat([*parts, stack_on(wide, device), *[s.to(device) for s in steps], *parts_after])
        if self.reducer is not None:
            flat = sum_over_processes(flat, len(narrow) + len(wide) - 1, self.reducer)
        host = flat.tolist()  # the one host transfer of this pass
        n_narrow, n_grads = len(self._narrow), len(present)
        grad_norms = exact_norms(present, host[n_narrow : n_narrow + n_grads], self.reducer)
        if self.clip_grad_norm is not None:  # what training with clipping would step with (the scaled gradients)
            grad_norms = _clipped(grad_norms, self.clip_grad_norm * self._loss_scale)
        figures = self._unpack(host, params, grads, grad_norms, batch_size, len(narrow) + len(wide))
        figures.exact = figures.exact and not self._overwritten
        if self._inexact is not None:
            kept = self._inexact
            figures.weight_grad_sq, figures.other_grad_sq = kept.weight_grad_sq, kept.other_grad_sq
            figures.grad_nonfinite, figures.total_grad_norm = kept.grad_nonfinite, kept.total_grad_norm
        self._note_nonzero_gradients(figures)
        if figures.exact:
            self.activation_passes.append(self._activation_pass)
        self._plan_precision(figures)  # for the next pass, or for this one measured again
        return figures

    def _note_nonzero_gradients(self, figures: _PassFigures) -> None:
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

    def _plan_precision(self, figures: _PassFigures) -> None:
        """Which slots the next pass must take in float64: those whose value here left SAFE_FLOAT32_NORM."""
        self._wide_keys = set()
        low, high = SAFE_FLOAT32_NORM
        raw = self._loss_scale**2  # the hooks see the scaled gradients
        for slot, sums, factor in (
            (self._FORWARD, figures.forward_sq, 1.0),
            (self._BACKWARD, figures.backward_sq, raw),
        ):
            for index, sq in enumerate(sums):
                if not low * low <= sq * factor <= high * high:
                    self._wide_keys.add((slot, index))

    def _unpack(self, host, params, grads, grad_norms, batch_size, n_scalars) -> _PassFigures:
        n_layers = len(self.layers)
        forward_sq, backward_sq = [0.0] * n_layers, [0.0] * n_layers
        backward_seen = [False] * n_layers
        n_narrow = len(self._narrow_slots)
        wide_values = host[n_narrow + len(grad_norms) :]
        forward = self._FORWARD
        # (a plain loop: it runs for every output and output gradient of every pass)
        for (slot, index), value in zip([*self._narrow_slots, *self._wide_slots], [*host[:n_narrow], *wide_values]):
            if slot == forward:
                forward_sq[index] += value * value
            else:
                backward_sq[index] += value * value
                backward_seen[index] = True
        # Each float32 sum of squares in its exact range (a slot is in float32 or float64 for the whole pass, so
        # its sum is all float32 norms, one per output where a layer has several).
        low, high = EXACT_FLOAT32_NORM
        sums = {self._FORWARD: forward_sq, self._BACKWARD: backward_sq}
        exact = all(low * low <= sums[slot][index] <= high * high for slot, index in self._narrow_slots)
        with_grad = [entry for entry, grad in zip(params, grads) if grad is not None]
        weight_sq, other_sq, grad_nonfinite, total_sq = gradient_squares(with_grad, grad_norms, n_layers)
        loss_value = host[n_scalars - 1]
        time_steps: dict[str, list[float]] = {}
        offset = n_scalars
        for name, probe, time_dim in self._time_probes:
            if probe.grad is None:
                continue
            length = int(probe.shape[time_dim])
            previous = time_steps.setdefault(name, [0.0] * length)
            for t in range(length):
                previous[t] += host[offset + t]
            offset += length
        fp16_counts: dict[int, tuple[float, float, float]] = {}
        for k, (index, _) in enumerate(self._range_counts):
            # elements that are not NaN, above zero, above fp16's smallest normal, above its largest
            counted, positive, normal, beyond = host[offset + 4 * k : offset + 4 * k + 4]
            under, over, total = fp16_counts.get(index, (0.0, 0.0, 0.0))
            fp16_counts[index] = (under + positive - normal, over + beyond, total + counted)
        # Gradients carry the loss scale: divide it out (a power of two, so exactly).
        scale = self._loss_scale
        if scale != 1.0:
            backward_sq = [sq / (scale * scale) for sq in backward_sq]
            weight_sq = [None if sq is None else sq / (scale * scale) for sq in weight_sq]
            other_sq = [None if sq is None else sq / (scale * scale) for sq in other_sq]
            total_sq /= scale * scale
            time_steps = {name: [v / (scale * scale) for v in values] for name, values in time_steps.items()}
        numel = list(self._numel)
        if self.reducer is not None:  # sums over N processes of equal slices: see sum_over_processes
            n = self.reducer.world_size
            backward_sq = [sq / (n * n) for sq in backward_sq]
            time_steps = {name: [v / (n * n) for v in values] for name, values in time_steps.items()}
            loss_value, numel, batch_size = loss_value / n, [count * n for count in numel], batch_size * n
        return _PassFigures(
            forward_sq, numel, backward_sq, backward_seen, weight_sq, other_sq, grad_nonfinite,
            time_steps, loss_value, math.sqrt(total_sq) if params else None, batch_size, exact,
            fp16_counts,
        )  # fmt: skip


def _squared_derivative_from_output(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """phi'(h)^2 written in terms of y = phi(h), for the activations where that is exact. The same function
    for modules of one type and parameters, so that their sites are reduced together."""
    if isinstance(module, nn.ReLU):  # y >= 0, and phi' is 1 exactly where y > 0: sign(y)
        return torch.sign
    if isinstance(module, nn.Sigmoid):
        return _sigmoid_squared
    if isinstance(module, nn.Tanh):
        return _tanh_squared
    if isinstance(module, nn.ReLU6):
        return _relu6_squared
    if isinstance(module, nn.LeakyReLU):
        return _leaky_relu_squared(module.negative_slope)
    if isinstance(module, nn.ELU):  # y = alpha (e^h - 1) below 0, so phi' = y + alpha there
        return _elu_squared(1.0, module.alpha)
    if isinstance(module, nn.SELU):  # y = scale alpha (e^h - 1) below 0
        return _elu_squared(1.0507009873554805, 1.6732632423543772)
    return None


def _squared(derivative: torch.Tensor) -> torch.Tensor:
    return derivative.square()


def _sigmoid_squared(y: torch.Tensor) -> torch.Tensor:
    return (y - y * y).square_()


def _tanh_squared(y: torch.Tensor) -> torch.Tensor:
    return (1 - y * y).square_()


def _relu6_squared(y: torch.Tensor) -> torch.Tensor:
    return ((y > 0) & (y < 6)).to(y.dtype)


@functools.cache
def _leaky_relu_squared(slope: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda y: torch.where(y > 0, 1.0, slope * slope).to(y.dtype)


@functools.cache
def _elu_squared(scale: float, alpha: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """ELU (scale 1) and SELU: y = scale alpha (e^h - 1) below 0, so phi' = y + scale alpha there."""
    return lambda y: torch.where(y > 0, scale, y + scale * alpha).to(y.dtype).square_()


def _derivative_by_autograd(module: nn.Module, args: tuple) -> torch.Tensor | None:
    """Any other elementwise activation: differentiate it again on a copy of its input."""
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
        return None
    with torch.enable_grad():
        leaf = args[0].detach().clone().requires_grad_(True)
        out = module.forward(leaf * 1.0)  # * 1.0: an in-place activation must not write to the leaf
        (derivative,) = torch.autograd.grad(out, leaf, torch.ones_like(out))
    return derivative


# Kept tensors are reduced together once they hold this much: small enough that they are still in cache (at
# 8 MiB, a 200-layer narrow MLP's norms read them back from memory: 3.6 ms a probe against 2.8), and a bound
# on the memory batching may add.
DEFER_BYTES = 2**18
# A tensor of this many elements (256 KiB in float32) or more is reduced at once, while it is in cache, and
# its output's gradient measured in a hook; smaller ones are batched (see _Recorder).
LARGE_NUMEL = 2**16
# Activation outputs are reduced together once they hold this much: their stacked copy stays small enough to
# be served from memory the allocator already holds (a stack of all of a pass's sites took fresh pages,
# which cost more than the per-site ops it saved).
ACTIVATION_BATCH_BYTES = 2**18
# A slot whose previous pass lay inside this range, a thousandfold inside the exact one, is taken in
# float32: the scale of a layer's signal does not move that far between two batches.
SAFE_FLOAT32_NORM = (1e-7, 1e12)


def _clipped(norms: list[float], max_norm: float) -> list[float]:
    """The norms of the gradients torch.nn.utils.clip_grad_norm_ would leave: all scaled by one coefficient,
    max_norm over their total norm, where that is below 1 (NaN where the total is: the gradients become NaN)."""
    coefficient = max_norm / (math.sqrt(sum(norm * norm for norm in norms)) + 1e-6)
    if math.isnan(coefficient) or coefficient < 1.0:
        return [norm * coefficient for norm in norms]
    return norms


def _assemble(
    model: nn.Module,
    params: list[nn.Parameter],
    name: str | None,
    recorder: _Recorder,
    per_pass: list[_PassFigures],
    passes: int,
    seed: int,
    seconds: float,
    structure: ModelStructure | None,
) -> ProbeResult:
    layer_stats: list[LayerStats] = []
    ranking = recorder.ranked()
    weights = weight_figures(recorder.layers, recorder.reducer)
    for index, (param_count, trainable, shared) in zip(ranking, held_parameters(recorder.layers, ranking)):
        layer_name, module = recorder.layers[index]
        figures = weights[index]
        layer_stats.append(
            LayerStats(
                name=layer_name or "(model)",
                type=layer_type(module),
                calls=recorder.calls[index],
                param_count=param_count,
                trainable=trainable,
                shared_with=shared,
                normalized_by=_normalizer_name(recorder, index),
                starts_path=index in recorder.path_starts,
                grad_nonzero_in_a_pass=index in recorder.nonzero_grad,
                **figures,
                **_pass_figures(index, per_pass, figures.get("weight_norm")),
            )
        )
    first_param = params[0] if params else None
    time_series = _median_series([p.time_steps for p in per_pass], [p.batch_size for p in per_pass])
    return ProbeResult(
        model_name=name or type(model).__name__,
        param_count=sum(p.numel() for p in params),
        trainable_param_count=sum(p.numel() for p in params if p.requires_grad),
        batch_size=per_pass[0].batch_size,
        passes=passes,
        seed=seed,
        seconds=seconds,
        dtype=str(first_param.dtype).replace("torch.", "") if first_param is not None else "n/a",
        device=str(first_param.device) if first_param is not None else "cpu",
        layers=layer_stats,
        recurrent=[
            _recurrent_stats(model, name, recorder.recurrent_types.get(name, "RNN"), steps, recorder.stacks.layer(name))
            for name, steps in time_series.items()
        ],
        losses=[p.loss for p in per_pass],
        total_grad_norms=[p.total_grad_norm for p in per_pass if p.total_grad_norm is not None],
        structure=structure,
        hooked=recorder.hooked,
        activations=_activation_stats(recorder.activation_sites, recorder.activation_passes),
    )


def _normalizer_name(recorder: _Recorder, index: int) -> str | None:
    norm = recorder.normalized_by.get(index)
    return None if norm is None else recorder.layers[norm][0] or "(model)"


def _activation_stats(sites: list[_ActivationSite], passes: list[_ActivationPass]) -> list[ActivationStats]:
    """Pooled over the passes: E[phi'^2] and the saturated share over every value seen, and for ReLU-like
    sites the share of units never active in any pass. All sites are reduced together: one transfer."""
    calls: dict[str, int] = {}
    for site in sites:
        calls[site.name] = max(calls.get(site.name, 0), site.call + 1)
    numel = [0] * len(sites)
    for records in passes:
        for index, count in records.numel.items():
            numel[index] += count
    blocks = [block for records in passes for block in records.unit_sums]
    saturated = [block for records in passes for block in records.saturated]
    totals, alive, flat_counts = [0.0] * len(sites), [0.0] * len(sites), [0.0] * len(sites)
    if blocks:
        device = blocks[0][1].device
        n = len(sites)
        offsets, position = [], 0  # where each site's units start among all sites' units
        for site in sites:
            offsets.append(position)
            position += site.units
        site_totals = torch.zeros(n, dtype=NORM_DTYPE, device=device)
        hits = torch.zeros(position, dtype=NORM_DTYPE, device=device)  # per unit: passes where it was active
        # The rows of one width joined: a few ops for all the sites, whatever their number.
        by_width: dict[int, list[tuple[list[int], torch.Tensor]]] = {}
        for indices, rows in blocks:
            by_width.setdefault(rows.shape[1], []).append((indices, rows))
        for width, parts in by_width.items():
            indices = [index for part, _ in parts for index in part]
            rows = join_on(torch.cat, [rows for _, rows in parts], device)
            site_totals.index_add_(0, torch.tensor(indices, device=device), rows.sum(dim=1, dtype=NORM_DTYPE))
            # A unit is alive if its sum of phi'^2 was positive in some pass.
            per_unit = [k for k, index in enumerate(indices) if sites[index].dying and sites[index].units == width]
            if per_unit:
                starts = torch.tensor([offsets[indices[k]] for k in per_unit], device=device)
                unit_ids = starts.unsqueeze(1) + torch.arange(width, device=device)
                active = rows if len(per_unit) == len(indices) else rows[per_unit]
                hits.index_add_(0, unit_ids.flatten(), (active > 0).flatten().to(NORM_DTYPE))
        # (output_size given: without it, CUDA reads the repeats' sum back to the host first)
        unit_site = torch.repeat_interleave(
            torch.arange(n, device=device), torch.tensor([s.units for s in sites], device=device), output_size=position
        )
        alive_units = torch.zeros(n, dtype=NORM_DTYPE, device=device).index_add_(
            0, unit_site, (hits > 0).to(NORM_DTYPE)
        )
        flat_total = torch.zeros(n, dtype=NORM_DTYPE, device=device)
        if saturated:
            flat_total.index_add_(
                0,
                torch.tensor([index for indices, _ in saturated for index in indices], device=device),
                join_on(torch.cat, [counts for _, counts in saturated], device).to(NORM_DTYPE),
            )
        host = torch.cat([site_totals, alive_units, flat_total]).tolist()  # the one transfer
        n = len(sites)
        totals, alive, flat_counts = host[:n], host[n : 2 * n], host[2 * n :]
    stats = []
    for site in sites:
        i, seen = site.index, numel[site.index]
        # sum of sign(bound - phi'^2) over the values = saturated - unsaturated
        saturated_fraction = (seen + flat_counts[i]) / (2 * seen) if seen and site.type in PEAK_DERIVATIVE else None
        stats.append(
            ActivationStats(
                name=f"{site.name}[{site.call}]" if calls[site.name] > 1 else site.name,
                type=site.type,
                after=site.after,
                units=site.units if site.dying else 0,
                saturated_fraction=saturated_fraction,
                dead_fraction=1.0 - alive[i] / site.units if site.dying and site.units and seen else None,
                derivative_rms=math.sqrt(totals[i] / seen) if seen else None,
            )
        )
    return stats


def _recurrent_stats(
    model: nn.Module, name: str, kind: str, steps: list[float], layer: tuple[nn.RNNBase, str] | None = None
) -> RecurrentStats:
    """``layer``: (the single-layer module, the stacked module's name) when ``name`` is a layer of a stack."""
    module, stack = layer or (model.get_submodule(name) if name else model, None)
    spectral, nonlinearity, gate_bias = None, None, None
    with torch.no_grad():
        if isinstance(module, nn.RNN):
            nonlinearity = module.nonlinearity
            spectral = float(torch.linalg.matrix_norm(module.weight_hh_l0.detach().to(NORM_DTYPE), ord=2))
        elif isinstance(module, (nn.LSTM, nn.GRU)) and module.bias:
            # rows [h:2h] hold the forget gate (LSTM: input, forget, cell, output) or the update gate
            # (GRU: reset, update, new); the two bias vectors add
            h = module.hidden_size
            total = module.bias_ih_l0.detach()[h : 2 * h] + module.bias_hh_l0.detach()[h : 2 * h]
            gate_bias = float(total.to(NORM_DTYPE).mean())
    return RecurrentStats(name, kind, steps, spectral, nonlinearity, gate_bias, stack)


def has_skip_connections(loss: torch.Tensor, nodes: list[Any]) -> bool:
    """Whether the autograd graph behind ``loss`` has a skip connection (see read_skips)."""
    return read_skips(loss, nodes).merges > 0


@dataclass(frozen=True)
class Skips:
    """The skip connections of one autograd graph: where two paths of different weighted depth merge."""

    additions: int = 0  # x + f(x): residual connections
    concatenations: int = 0  # torch.cat([x, f(x)]): DenseNet, Inception's branches, U-Net

    @property
    def merges(self) -> int:
        return self.additions + self.concatenations


def read_skips(loss: torch.Tensor, nodes: list[Any]) -> Skips:
    """The merges in the autograd graph behind ``loss`` of tensors that crossed different numbers of
    weighted operations, as x + f(x) and torch.cat([x, f(x)]) do: the mark of a skip connection, whatever
    the forward code, the module names or their nesting. Inception's branches of 1, 2 and 3 convolutions
    concatenated count as one merge, as a residual block's sum does: each merge is one block.
    ``nodes`` receives every node the walk reads, for release_nodes once the graph's roots are gone.
    """
    walk = walk_weighted_depths(loss, nodes)
    additions = len(walk.additions)
    return Skips(additions, len(walk.merges) - additions)


@dataclass
class WeightedDepths:
    """The autograd graph behind a loss, read by walk_weighted_depths."""

    # Per node: (fed only by parameters, as a weight through .t() or a view; such a node feeds a parameter of 2+
    # dims; depth in weighted operations).
    nodes: dict[Any, tuple[bool, bool, int]] = field(default_factory=dict)
    # Each addition or concatenation of operands of different depths: (its node, its name, its operand nodes).
    merges: list[tuple[Any, str, list[Any]]] = field(default_factory=list)

    @property
    def additions(self) -> list[tuple[Any, str, list[Any]]]:
        """The merges that are x + f(x), not torch.cat."""
        return [merge for merge in self.merges if merge[1] in _ADD_NODES]


def walk_weighted_depths(loss: torch.Tensor, nodes: list[Any]) -> WeightedDepths:
    """Every node behind ``loss`` with its depth in weighted operations, and the skip merges (read_skips).

    A weighted operation is a node fed (through views) by a parameter of 2 or more dimensions; a bias,
    a norm's scale or a positional table added directly are parameters, not operands, so they do not
    count, and two embeddings added together are the same depth. A merge with the raw input alone (depth
    0) is not a skip merge.
    ``nodes`` receives every node the walk reads, for release_nodes once the graph's roots are gone.
    """
    walk = WeightedDepths()
    root = loss.grad_fn
    if root is None:
        return walk
    nodes.append(root)
    # A deep model's graph has thousands of nodes: each is read once (its name, its children), and a node on the
    # stack carries them once they are read.
    seen = walk.nodes
    stack: list[tuple[Any, str, list[Any]] | tuple[Any, None, None]] = [(root, None, None)]
    while stack:
        node, name, children = stack.pop()
        if node in seen:
            continue
        if children is None:
            name = node.name()
            if name == _ACCUMULATE_GRAD:  # a leaf parameter
                seen[node] = (True, node.variable.dim() >= 2, 0)
                continue
            children = [child for child, _ in node.next_functions if child is not None]
            nodes.extend(children)
            stack.append((node, name, children))
            stack.extend((child, None, None) for child in children if child not in seen)
            continue
        fed = [seen[child] for child in children]
        operands = [depth for param_only, _, depth in fed if not param_only]
        param_only = bool(children) and not operands and name in VIEW_NODES
        weighted = param_only and any(w for _, w, _ in fed)
        # A parameter added or multiplied elementwise (a positional table, a scale) is not a weighted op.
        own = not param_only and name not in ELEMENTWISE_NODES and any(p and w for p, w, _ in fed)
        depth = max(operands, default=0) + (1 if own else 0)
        seen[node] = (param_only, weighted, depth)
        if len(operands) >= 2 and len(set(operands)) > 1 and min(operands) >= 1 and name in _MERGE_NODES:
            walk.merges.append((node, name, [child for child in children if not seen[child][0]]))
    return walk


def _pass_figures(index: int, per_pass: list[_PassFigures], weight_norm: float | None) -> dict[str, Any]:
    """A layer's LayerStats figures from the passes: the median of each (its min and max in ``spread``),
    and whether any was non-finite. Called once per layer: a deep model has thousands."""
    forward, backward, weight, other, relative, total = [], [], [], [], [], []
    grad_nonfinite = False
    fp16 = []
    for figures in per_pass:
        numel = figures.forward_numel[index]
        if numel:
            forward.append(math.sqrt(figures.forward_sq[index] / numel))
        if figures.backward_seen[index]:
            # per-sample RMS of the output gradient: the loss is a batch mean, so each sample's own
            # gradient is B times its share; sqrt(B * sum of squares) = B * RMS over samples.
            backward.append(math.sqrt(figures.batch_size * figures.backward_sq[index]))
        if figures.grad_nonfinite[index]:
            grad_nonfinite = True
        weight_sq, other_sq = figures.weight_grad_sq[index], figures.other_grad_sq[index]
        if weight_sq is not None or other_sq is not None:
            weight_grad, other_grad, grad, relative_grad = gradient_figures(weight_sq, other_sq, weight_norm)
            if weight_grad is not None:
                weight.append(weight_grad)
            if relative_grad is not None:
                relative.append(relative_grad)
            if other_grad is not None:
                other.append(other_grad)
            total.append(grad)
        if figures.fp16_counts and index in figures.fp16_counts:
            fp16.append(figures.fp16_counts[index])
    forward_nonfinite = not all(map(math.isfinite, forward))
    backward_nonfinite = not all(map(math.isfinite, backward))
    out: dict[str, Any] = {
        "grad_nonfinite": grad_nonfinite,
        "forward_nonfinite": forward_nonfinite,
        "backward_nonfinite": backward_nonfinite,
    }
    spread: dict[str, tuple[float, float]] = {}
    named = (
        ("forward_rms", forward), ("backward", backward), ("weight_grad_norm", weight), ("relative_grad", relative),
        ("other_grad_norm", other), ("grad_norm", total),
    )  # fmt: skip
    # Without a NaN among the values (which only these flags and a weight norm that is not finite can bring),
    # one sort gives the median and the spread; with one, sorted() and min()/max() may disagree: min()/max().
    nonfinite_weight = weight_norm is not None and not math.isfinite(weight_norm)
    ordered_is_exact = not (grad_nonfinite or forward_nonfinite or backward_nonfinite or nonfinite_weight)
    for key, values in named:
        if not values:
            continue
        ordered = sorted(values)
        out[key] = median_of_sorted(ordered)
        spread[key] = (ordered[0], ordered[-1]) if ordered_is_exact else (min(values), max(values))
    out["spread"] = spread
    seen = sum(c[2] for c in fp16)
    if seen:
        out["fp16_underflow"] = sum(c[0] for c in fp16) / seen
        out["fp16_overflow"] = sum(c[1] for c in fp16) / seen
    return out


def _median_series(per_pass: list[dict[str, list[float]]], batch_sizes: list[int]) -> dict[str, list[float]]:
    names = dict.fromkeys(name for figures in per_pass for name in figures)  # in the order first measured
    out: dict[str, list[float]] = {}
    for name in names:
        runs = [
            [math.sqrt(b * v) for v in figures[name]] for figures, b in zip(per_pass, batch_sizes) if name in figures
        ]
        out[name] = [statistics.median([run[t] for run in runs]) for t in range(min(len(r) for r in runs))]
    return out
