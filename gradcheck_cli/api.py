"""The Python entry point: probe a model and diagnose it in one call."""

from __future__ import annotations

from torch import nn

from gradcheck_cli.arguments import module_argument, number_argument, patterns_argument
from gradcheck_cli.diagnosis import Thresholds, diagnose, settle_zero_init
from gradcheck_cli.errors import GradcheckError
from gradcheck_cli.probe import BatchFn, LossFn, ProgressFn, Reducer, probe_model
from gradcheck_cli.report import Report
from gradcheck_cli.stats import ModelStructure
from gradcheck_cli.torch_compat import eager_model


def check_model(
    model: nn.Module,
    make_batch: BatchFn,
    loss_fn: LossFn,
    *,
    passes: int = 3,
    seed: int = 0,
    thresholds: Thresholds | None = None,
    title: str | None = None,
    structure: ModelStructure | None = None,
    progress: ProgressFn | None = None,
    clip_grad_norm: float | None = None,
    ignore: tuple[str, ...] = (),
    reducer: Reducer | None = None,
) -> Report:
    """Measure ``model`` over ``passes`` forward/backward passes and diagnose its gradient health.

    The model is left as found (weights, ``.grad``, buffers, hooks, train/eval mode, RNG state). A
    ``torch.compile``'d model (or submodule) is measured through its original module, eagerly: the figures
    and layer names are the uncompiled model's, and the report's context says so. Exact
    zeros that zero-initialized layers may explain are settled by one SGD step on a copy. Layers whose
    names match a glob in ``ignore`` are measured but not judged. ``reducer``: a distributed scan's
    figures are summed over its processes (gradcheck_cli.distributed).

    Raises TypeError when ``model`` is not an ``nn.Module`` instance or ``ignore`` is not a list of glob
    patterns, and ValueError when ``passes`` or ``seed`` is out of its range (``gradcheck_cli.limits``).
    """
    module_argument(model)
    passes = number_argument("passes", passes)
    seed = number_argument("seed", seed)
    ignore = patterns_argument(ignore)
    with eager_model(model) as eager:  # a torch.compile'd model: its original module, run eagerly (issue 23)
        model = eager.model
        result = probe_model(
            model, make_batch, loss_fn, passes=passes, seed=seed, name=title, structure=structure, progress=progress,
            clip_grad_norm=clip_grad_norm, reducer=reducer,
        )  # fmt: skip
        diagnosis = diagnose(result, thresholds, ignore)
        if diagnosis.needs_step_check:
            diagnosis = _check_zero_init(
                model, make_batch, loss_fn, diagnosis, passes, seed, thresholds, structure, ignore, reducer
            )
    report = Report(title=title or result.model_name, result=result, diagnosis=diagnosis)
    if eager.note:
        report.context.append(("compiled", eager.note))
    return report


def _check_zero_init(model, make_batch, loss_fn, diagnosis, passes, seed, thresholds, structure, ignore, reducer):
    from gradcheck_cli.training import ZERO_INIT_CHECK_LR, train_copy

    step = f"one SGD step (lr {ZERO_INIT_CHECK_LR:g})"
    try:
        for _, stepped, _ in train_copy(
            model, make_batch, loss_fn, steps=1, lr=ZERO_INIT_CHECK_LR, seed=seed, purpose="the zero-init check"
        ):
            after = diagnose(
                probe_model(
                    stepped, make_batch, loss_fn, passes=passes, seed=seed, structure=structure, reducer=reducer
                ),
                thresholds,
            )
    except GradcheckError:
        return diagnosis  # a model that cannot be copied or stepped keeps its findings as measured
    return settle_zero_init(diagnosis, after, step)
