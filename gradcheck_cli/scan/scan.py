"""``gradcheck scan``: load a user's model, plan its inputs and loss, probe it and diagnose it."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from gradcheck_cli.common.batches import ProgressFn
from gradcheck_cli.common.errors import GradcheckError, ModelRunError, RepeatCallError, UserCodeExit
from gradcheck_cli.common.options import ScanOptions
from gradcheck_cli.examine.check_model import check_model
from gradcheck_cli.judge.diagnosis import Thresholds
from gradcheck_cli.load.inputs import plan_inputs
from gradcheck_cli.load.loading import load_target
from gradcheck_cli.load.objective import Objective
from gradcheck_cli.measure.placement import AS_PLACED, Placement, move_to_placement
from gradcheck_cli.measure.torch_compat import eager_model
from gradcheck_cli.report.report import Report
from gradcheck_cli.trials.steps import track_training
from gradcheck_cli.trials.verify import try_on_copy, verify_fixes

if TYPE_CHECKING:
    from gradcheck_cli.load.distributed import DistributedRun


def scan_target(
    target: str,
    options: ScanOptions,
    thresholds: Thresholds | None = None,
    progress: ProgressFn | None = None,
    ranks: DistributedRun | None = None,
    placement: Placement = AS_PLACED,
) -> Report:
    """One target to one report. Raises GradcheckError with a message for the user on bad input.

    The model gradcheck loads is its own to move: it goes to ``placement.device``, and the passes run under
    ``placement.amp``.

    ``ranks``: this process's place in a torchrun job. Every process loads the model, which is then sharded
    or replicated over them, and scans its slice of the batch; after each step the processes agree on
    whether one failed, so an error on one reaches all of them instead of leaving the others waiting.
    """
    step = ranks.sync_point if ranks is not None else contextlib.nullcontext
    with contextlib.ExitStack() as scope:
        with step():
            if ranks is not None:
                ranks.check_options(options.verify, options.steps)
            # The model's weights are drawn with the scan's seed too: the same seed gives the same report.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(options.seed)
                loaded = load_target(
                    target, entry=options.entry, paths=list(options.paths), trust_pickle=options.trust_pickle
                )
            # A torch.compile'd model: its original module, run eagerly, placed and spread (issue 23).
            model = scope.enter_context(eager_model(loaded.model)).model
            move_to_placement(model, placement)  # loaded from the file by gradcheck: ours to move (--device)
        title = f"{target} ({type(model).__name__})"
        if ranks is not None:
            with step():
                model, spread_how = ranks.spread(model, loaded.namespace, target)
        with step():
            report = scan_model(
                model, options, thresholds, progress, namespace=loaded.namespace, saved_inputs=loaded.saved_inputs,
                title=title, description=loaded.description, ranks=ranks, placement=placement,
            )  # fmt: skip
    if ranks is not None:
        report.context.append(("processes", ranks.describe(spread_how, report.result.batch_size)))
    report.target, report.source_path, report.source_line = target, loaded.source_path, loaded.source_line
    return report


def scan_model(
    model: nn.Module,
    options: ScanOptions,
    thresholds: Thresholds | None = None,
    progress: ProgressFn | None = None,
    *,
    namespace: dict[str, Any] | None = None,
    saved_inputs: tuple[tuple, dict] | None = None,
    title: str | None = None,
    description: str | None = None,
    inputs: Any = None,
    ranks: DistributedRun | None = None,
    placement: Placement = AS_PLACED,
) -> Report:
    """Plan the inputs and the loss of a model in hand, measure and diagnose it. ``namespace`` holds
    what a model file may define: ``example_inputs``, ``loss_fn``; ``inputs`` (a value, or a function
    returning one per pass) comes first. With ``ranks`` (a model already spread over a torchrun job's
    processes) each process measures its slice of every batch and the figures are summed over them. The model
    is not moved (it is the caller's); the passes, and those of every copy, run under ``placement.amp``."""
    with eager_model(model) as eager:  # a torch.compile'd model: its original module, run eagerly (issue 23)
        model = eager.model
        namespace = namespace or {}
        title = title or type(model).__name__
        description = description or f"the {type(model).__name__} given"
        params = list(model.parameters())
        if not params:
            raise GradcheckError(
                f"{description} has no parameters, so there is no gradient to measure; check that this is the model "
                "you mean to scan and that its layers are registered as submodules (attributes, nn.ModuleList or "
                "nn.Sequential, not a plain list)."
            )
        if not any(p.requires_grad for p in params):
            raise GradcheckError(
                f"no parameter of {description} requires grad, so there is no gradient to check; "
                "unfreeze it (model.requires_grad_(True)) in the model file."
            )
        given = None if inputs is None else inputs if callable(inputs) else (lambda: inputs)
        plan = plan_inputs(model, namespace, options.inputs, saved_inputs, given)
        objective = Objective(model, options.loss, namespace)
        while True:  # once, unless guessed images are too small for the model: then at the next size (plan.after)
            make_batch, loss_fn = plan.make_batch, objective
            if ranks is not None:
                make_batch, loss_fn = ranks.split(plan.make_batch), ranks.split_loss(objective)
            try:
                report = check_model(
                    model, make_batch, loss_fn, passes=options.passes, seed=options.seed, thresholds=thresholds,
                    title=title, progress=progress, ignore=options.ignore, reducer=ranks, placement=placement,
                )  # fmt: skip
                break
            except ModelRunError as error:
                # (not the inputs': a failure in the loss or the backward, on a repeated call, or sys.exit())
                if error.stage != "forward pass" or isinstance(error, (RepeatCallError, UserCodeExit)):
                    raise
                retry = plan.after(error)
                if retry is None:
                    raise GradcheckError(
                        f"{error} (inputs tried: {plan.shapes}, {plan.description}); {plan.hint}."
                    ) from error
                plan = retry
        if options.steps:
            track_training(
                model, plan.make_batch, objective, report, steps=options.steps, optimizer=options.optimizer,
                lr=(thresholds or Thresholds()).lr, passes=options.passes, seed=options.seed, thresholds=thresholds,
                placement=placement,
            )  # fmt: skip
        if options.verify:
            report.fix_trials = verify_fixes(
                report,
                lambda fix: try_on_copy(
                    model, plan.make_batch, objective, fix, passes=options.passes, seed=options.seed,
                    thresholds=thresholds, title=report.title, placement=placement,
                ),
            )  # fmt: skip
        report.context[:0] = [  # before check_model's own rows (a compiled model's note)
            ("model", description),
            ("inputs", plan.description),
            ("output", objective.output_description),
            ("loss", objective.loss_description),
        ]
        return report
