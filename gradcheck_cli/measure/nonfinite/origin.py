"""Reading the watched pass: the module (or the loss) that made the first NaN/Inf, the modules that passed it on,
and which of the ops seen inside it to name."""

from __future__ import annotations

import torch

from gradcheck_cli.common.stats import NonfiniteOp, NonfiniteOrigin
from gradcheck_cli.measure.nonfinite.op_domains import SeenOp
from gradcheck_cli.measure.nonfinite.tally import loss_value
from gradcheck_cli.measure.nonfinite.watcher import GradEvent, ModuleCall

PASSED_ON_LIMIT = 20  # a deep model passes a NaN through hundreds of modules; the first few say enough


def forward_origin(calls: list[ModuleCall]) -> NonfiniteOrigin | None:
    # Children's forward hooks fire before their parent's, so the first call that made a NaN from
    # finite inputs is the innermost; a parent is only reached when its own code made it.
    origin = next((c for c in calls if c.inputs.finite and not c.output.finite and not _passes_mask(c)), None)
    if origin is not None:
        detail = f"output: {origin.output}"
        if origin.masked:
            detail += f" (its inputs also held {origin.masked} -Inf, read as an attention mask)"
    else:
        took_in = [c for c in calls if not c.inputs.finite]
        if not took_in:
            return None
        # No module made it: it came in from outside, the batch itself when the model is the first to see it.
        origin = min(took_in, key=lambda c: c.order)
        source = (
            "the batch itself is not finite" if origin.parent is None else "it came from outside the watched modules"
        )
        detail = f"input: {origin.inputs}; {source}"
    passers = [c.name for c in calls if not c.inputs.finite and not c.output.finite]
    return NonfiniteOrigin(
        "forward",
        origin.name,
        origin.type,
        detail,
        origin.input_ranges,
        _passed_on(passers, origin),
        made_op(origin.ops) if origin.inputs.finite else None,
    )


def _passes_mask(call: ModuleCall) -> bool:
    """A module that took a mask in and gave only -inf out (expanded, reshaped it) made nothing new."""
    return call.masked > 0 and call.output.mask_like


def backward_origin(
    events: list[GradEvent], loss: torch.Tensor, output_ranges: list, loss_ops: list[SeenOp]
) -> NonfiniteOrigin | None:
    call_fine: dict[ModuleCall, bool] = {}  # per call: every gradient that reached its output so far was finite
    module_fine: dict[int, bool] = {}  # the same over all calls of a module (its weights add them up)
    makers: list[GradEvent] = []
    passers: list[GradEvent] = []
    for event in events:
        call = event.call
        if event.kind == "output":
            call_fine[call] = call_fine.get(call, True) and event.tally.finite
            module_fine[call.module_id] = module_fine.get(call.module_id, True) and event.tally.finite
            continue
        fine = module_fine.get(call.module_id) if event.kind == "parameter" else call_fine.get(call)
        # None: no gradient reached its output, so this one came through another user of the tensor.
        if not event.tally.finite and fine is not None:
            (makers if fine else passers).append(event)
    passer_names = [event.call.name for event in passers]
    if makers:
        origin = makers[0]
        for event in makers[1:]:
            # An ancestor's input gradient is its child's: the innermost module made it.
            if origin.call.name in event.call.ancestors():
                origin = event
        call = origin.call
        detail = f"gradient w.r.t. {origin.what}: {origin.tally}; gradient at its output finite"
        return NonfiniteOrigin(
            "backward",
            call.name,
            call.type,
            detail,
            call.input_ranges,
            _passed_on(passer_names, call),
            _backward_op(call.ops),
        )
    first_bad = next((event for event in events if not event.tally.finite), None)
    if first_bad is None:
        return None
    # No module turned a finite output gradient into a non-finite one, so code between modules did: the
    # code that used the output of the outermost module producing this tensor, i.e. its caller's own
    # forward code, or the loss function when that module is the model itself.
    producers = [e.call for e in events if e.group == first_bad.group and e.kind == "output"] or [first_bad.call]
    producer = min(producers, key=lambda c: len(c.ancestors()))
    parent = producer.parent
    if parent is None:
        detail = (
            f"gradient of the loss w.r.t. the model output: {first_bad.tally}; the loss ({loss_value(loss)}) is finite"
        )
        passed = _passed_on(passer_names, None)
        return NonfiniteOrigin("loss", None, None, detail, output_ranges, passed, _backward_op(loss_ops))
    detail = f"gradient at the output of its child {producer.name}: {first_bad.tally}; made by its own code between child modules"
    return NonfiniteOrigin(
        "backward",
        parent.name,
        parent.type,
        detail,
        parent.input_ranges,
        _passed_on(passer_names, parent),
        _backward_op(parent.ops),
    )


def _passed_on(names: list[str], origin: ModuleCall | None) -> list[str]:
    """Names in firing order, once each, leaving out the origin and its containers (they hold it, not pass it)."""
    skip = origin.ancestors() | {origin.name} if origin is not None else set()
    return [name for name in dict.fromkeys(names) if name not in skip][:PASSED_ON_LIMIT]


def made_op(seen: list[SeenOp]) -> NonfiniteOp | None:
    """The op that made the forward pass's (or the loss's) NaN/Inf: the first that made NaN or +Inf, else the
    first that made -Inf (a log of 0; a -Inf mask made on purpose is passed over when something else made NaN)."""
    made = [s for s in seen if not s.op.singular]
    chosen = next((s for s in made if not s.mask_like), None) or next(iter(made), None)
    return chosen.op if chosen is not None else None


def _backward_op(seen: list[SeenOp]) -> NonfiniteOp | None:
    """The op behind a NaN/Inf the backward pass made: one whose NaN the forward pass hid (torch.where picks
    the finite branch, but the gradient of the other still flows back: 0 * NaN is NaN), else one with an
    infinite slope at its input."""
    hidden = next((s.op for s in seen if not s.op.singular and not s.mask_like), None)
    return hidden or next((s.op for s in seen if s.op.singular), None) or made_op(seen)
