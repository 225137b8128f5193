"""The pass runner: one seeded forward/backward pass of the user's model, with its failures said in the user's
terms, and what a probe must put back afterwards (the model's modes, gradients and buffers, the global RNG,
the garbage collector's state)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from gradcheck_cli.common import stages
from gradcheck_cli.common.batches import Batch, LossFn
from gradcheck_cli.common.errors import GradcheckError, ModelRunError, RepeatCallError, describe_exception
from gradcheck_cli.measure.graph import read_skips
from gradcheck_cli.measure.layer_figures import layer_type
from gradcheck_cli.measure.tensors import batch_on_device, tensors_in
from gradcheck_cli.measure.torch_compat import clear_frames, direct_buffers, direct_parameters, traceback_selves

if TYPE_CHECKING:
    from gradcheck_cli.measure.recorder import Recorder


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while the passes run, as timeit does, and put its state back on
    every way out (still disabled where the caller had disabled it).

    A probe keeps thousands of small objects alive while it runs (one norm, edge and record per layer and
    pass), and each 700 of them set off a collection that walks the whole process's young objects, and each
    tenth the older ones too: 17 collections and 3 ms of a 200-layer MLP's probe, an eighth of its overhead.
    Memory is still freed by reference counting; only cycles wait for the next collection after the probe.
    The collector's state is the process's: a probe is not thread-safe.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def model_parameters(modules: list[tuple[str, nn.Module]], fast: bool) -> list[nn.Parameter]:
    """model.parameters(), read off the modules already listed (``modules``: the model's named_modules())."""
    return unique(p for _, module in modules for p in direct_parameters(module, fast).values())


def seed_rng(seed: int, params: list[nn.Parameter]) -> None:
    """Seed the global RNG. torch.manual_seed also seeds every accelerator backend, lazily, recording a stack trace
    for each: a millisecond per probe. A model on the CPU needs only the CPU generator seeded."""
    if all(p.is_cpu for p in params):
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def cuda_devices(params: list[nn.Parameter]) -> list[int]:
    return sorted({p.get_device() for p in params if p.is_cuda})  # (p.device builds a torch.device each)


def rng_state(devices: list[int]) -> Callable[[], None]:
    """The global RNG state now, as the function that puts it back (to draw a pass's batch again)."""
    cpu = torch.get_rng_state()
    cuda = [torch.cuda.get_rng_state(d) for d in devices]

    def restore() -> None:
        torch.set_rng_state(cpu)
        for device, state in zip(devices, cuda):
            torch.cuda.set_rng_state(state, device)

    return restore


def unique(tensors: Iterator[torch.Tensor | None]) -> list[torch.Tensor]:
    """Each tensor once, in order, as model.parameters() and model.buffers() give them: read off the modules
    already listed, where each of those walks the module tree again (a millisecond on a 1000-layer model)."""
    seen: set[int] = set()
    out = []
    for tensor in tensors:
        if tensor is not None and id(tensor) not in seen:
            seen.add(id(tensor))
            out.append(tensor)
    return out


def snapshot(modules: list[tuple[str, nn.Module]], params: list[nn.Parameter], fast: bool) -> Callable[[], None]:
    """Record what a probe may change and return the function that puts it back. ``modules``: the model's
    named_modules()."""
    modes = [(m, m.training) for _, m in modules]
    grads = [p.grad for p in params]
    buffers = [(b, b.detach().clone()) for b in unique(b for _, m in modules for b in direct_buffers(m, fast))]
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


def forward_backward(
    model: nn.Module,
    params: list[nn.Parameter],
    batch: Batch,
    loss_fn: LossFn,
    recorder: Recorder,
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
        recorder.activations.reduce_kept()  # before the backward frees them
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ModelRunError("The loss must be a single-element tensor; check the loss function.", stage)
        if not loss.requires_grad:
            raise ModelRunError(_cut_graph_message(output, params), stage)
        if recorder.read_skips:
            recorder.skips = read_skips(loss, recorder.outputs.graph_nodes)  # before backward frees the graph
            recorder.read_skips = False
        stage = stages.BACKWARD
        stages.enter(stage)
        scaled = loss * loss_scale if loss_scale != 1.0 else loss
        if recorder.outputs.autograd_passes:
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
            ran = recorder.outputs.layers_run()
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
        recorder.outputs.release_graph()
    return value


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


def _failing_layer(model: nn.Module, error: BaseException) -> str | None:
    """The innermost module whose forward was on the stack when ``error`` was raised, as
    "name (Type)"; read off the traceback, so no hook is needed on the hot path."""
    names = {id(module): name for name, module in model.named_modules()}
    innermost = None
    for candidate in traceback_selves(error):
        if isinstance(candidate, nn.Module) and id(candidate) in names:
            innermost = candidate
    if innermost is None:
        return None
    return f"{names[id(innermost)] or '(model)'} ({layer_type(innermost)})"
