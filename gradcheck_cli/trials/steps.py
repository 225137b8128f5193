"""``--steps N``: how the gradient profile moves once training starts, measured on a copy after each step
(explosions often appear after a few steps; dead ReLUs appear as training moves the biases). The steps
themselves are taken by gradcheck_cli/examine/copies.py; the user's model is never stepped.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from gradcheck_cli.common.batches import BatchFn, LossFn
from gradcheck_cli.common.choices import Optimizer
from gradcheck_cli.common.stats import ModelStructure
from gradcheck_cli.examine.check_model import check_model
from gradcheck_cli.examine.copies import train_copy
from gradcheck_cli.judge.diagnosis import Thresholds, with_later_findings
from gradcheck_cli.measure.placement import AS_PLACED, Placement
from gradcheck_cli.report.report import Report, TrainingStep


def track_training(
    model: nn.Module,
    make_batch: BatchFn,
    loss_fn: LossFn,
    report: Report,
    *,
    steps: int,
    optimizer: Optimizer,
    lr: float,
    passes: int,
    seed: int,
    thresholds: Thresholds | None,
    structure: ModelStructure | None = None,
    placement: Placement = AS_PLACED,
) -> None:
    """Train a copy for ``steps`` steps, measure it after each (under ``placement``, as the model was), and add
    to ``report`` the steps and the findings that appear only once training has started."""
    report.training_setup = (
        f"{steps} {optimizer.value.upper()} step(s), lr {lr:g}, on a copy, with the same synthetic batches"
    )
    # step 0: the model as measured at initialization, before later findings are merged into the report
    report.training.append(TrainingStep(0, None, replace(report, training=[], fix_trials=[])))
    for step, trained, loss in train_copy(
        model, make_batch, loss_fn, steps=steps, optimizer=optimizer, lr=lr, seed=seed
    ):
        measured = check_model(
            trained, make_batch, loss_fn, passes=passes, seed=seed, thresholds=thresholds, title=report.title,
            structure=structure, placement=placement,
        )  # fmt: skip
        report.training.append(TrainingStep(step, loss, measured))
    if len(report.training) > 1:
        last = report.training[-1]
        report.diagnosis = with_later_findings(report.diagnosis, last.report.diagnosis, f"after {last.step} step(s)")
