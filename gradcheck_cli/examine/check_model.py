"""The Python entry point: probe a model and diagnose it in one call."""

from __future__ import annotations

from torch import nn

from gradcheck_cli.common.batches import BatchFn, LossFn, ProgressFn
from gradcheck_cli.common.stats import ModelStructure
from gradcheck_cli.examine.arguments import module_argument, number_argument, patterns_argument
from gradcheck_cli.examine.zero_init import settle_chain
from gradcheck_cli.judge.diagnosis import Thresholds, diagnose
from gradcheck_cli.measure.layer_figures import Reducer
from gradcheck_cli.measure.placement import AS_PLACED, Placement
from gradcheck_cli.measure.probe import probe_model
from gradcheck_cli.measure.torch_compat import eager_model
from gradcheck_cli.report.report import Report


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
    placement: Placement = AS_PLACED,
) -> Report:
    """Measure ``model`` over ``passes`` forward/backward passes and diagnose its gradient health.

    The model is left as found (weights, ``.grad``, buffers, hooks, train/eval mode, RNG state). A
    ``torch.compile``'d model (or submodule) is measured through its original module, eagerly: the figures
    and layer names are the uncompiled model's, and the report's context says so. Exact
    zeros that zero-initialized weights or gains may explain are settled by SGD steps on a copy, as many as
    the chain of zeros needs (gradcheck_cli.examine.zero_init). Layers whose names match a glob in ``ignore`` are
    measured but not judged. ``reducer``: a distributed scan's
    figures are summed over its processes (gradcheck_cli.load.distributed). ``placement.amp`` runs every pass
    (the zero-init check's on its stepped copies too) under autocast in that dtype; the model is never moved
    (``placement.device`` is for the models gradcheck builds or loads: ``move_to_placement``).

    Raises TypeError when ``model`` is not an ``nn.Module`` instance or ``ignore`` is not a list of glob
    patterns, and ValueError when ``passes`` or ``seed`` is out of its range (``gradcheck_cli.common.limits``).
    """
    module_argument(model)
    passes = number_argument("passes", passes)
    seed = number_argument("seed", seed)
    ignore = patterns_argument(ignore)
    with eager_model(model) as eager:  # a torch.compile'd model: its original module, run eagerly (issue 23)
        model = eager.model
        result = probe_model(
            model, make_batch, loss_fn, passes=passes, seed=seed, name=title, structure=structure, progress=progress,
            clip_grad_norm=clip_grad_norm, reducer=reducer, placement=placement,
        )  # fmt: skip
        diagnosis = settle_chain(
            model, make_batch, loss_fn, result, diagnose(result, thresholds, ignore), passes=passes, seed=seed,
            thresholds=thresholds, structure=structure, ignore=ignore, reducer=reducer, placement=placement,
        )  # fmt: skip
    report = Report(title=title or result.model_name, result=result, diagnosis=diagnosis)
    if eager.note:
        report.context.append(("compiled", eager.note))
    return report
