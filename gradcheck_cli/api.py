"""The Python entry point: probe a model and diagnose it in one call."""

from __future__ import annotations

from torch import nn

from gradcheck_cli.diagnosis import Thresholds, diagnose
from gradcheck_cli.probe import BatchFn, LossFn, ProgressFn, probe_model
from gradcheck_cli.report import Report
from gradcheck_cli.stats import ModelStructure


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
) -> Report:
    """Measure ``model`` over ``passes`` forward/backward passes and diagnose its gradient health.

    The model is left as found (weights, ``.grad``, buffers, hooks, train/eval mode, RNG state).
    """
    result = probe_model(
        model, make_batch, loss_fn, passes=passes, seed=seed, name=title, structure=structure, progress=progress
    )
    return Report(title=title or result.model_name, result=result, diagnosis=diagnose(result, thresholds))
