"""``gradcheck scan``: each target measured in a worker process, one report for them all, and the exit code.

A target that cannot be scanned (a bad option for it, its worker's error, a baseline that cannot be compared)
is reported in one sentence and makes the exit code 2; the other targets are still scanned and reported.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer

from gradcheck_cli.cli import outputs
from gradcheck_cli.cli.invocation import Invocation, invocation
from gradcheck_cli.cli.parameters import takes_settings
from gradcheck_cli.cli.resolve import Resolved, load_config
from gradcheck_cli.common.errors import GradcheckError, InvalidOptionError


@takes_settings("scan")
def scan(ctx: typer.Context, **values: Any) -> None:
    """Scan your model: measure every layer's gradient health over a few passes and say what to change.

    [dim]Example: gradcheck scan examples/vanishing_mlp.py[/]
    """
    from gradcheck_cli.cli.jobs import Distributed

    run_state = invocation(ctx)
    try:
        rank = outputs.torchrun_rank(ctx, values["distributed"], values["fsdp"])
        file_config = load_config(values["config"], values["isolated"], values["verbose"])
        targets_and_configs = _targets_and_configs(values["targets"], file_config)
        top = Resolved(ctx, values, file_config)
        output_settings = top.output()
        outputs.check_output(values["output"])
        compare_with = outputs.load_baseline(values["baseline"])
        plot_as = outputs.check_plot(values["plot"])
        limits = top.limits()
        spread = None if rank is None else Distributed(values["fsdp"], top["device"].value)
    except GradcheckError as error:
        run_state.fail(error)
    if rank:  # the first process writes the report, baseline and plot
        values = values | {"silent": True, "output": None, "save_baseline": None, "plot": None}
    jobs, planned = _plan(ctx, values, targets_and_configs, limits)
    silent, reports, outcomes, run = values["silent"], [], {}, None
    with contextlib.ExitStack() as stack:
        if jobs:
            label = jobs[0].target if len(jobs) == 1 else f"{len(jobs)} targets"
            try:
                with outputs.progress(f"Scanning {label}", silent):
                    run = stack.enter_context(outputs.worker_run(jobs, limits, silent, spread))
                    outcomes = {outcome.index: outcome for outcome in run.outcomes()}
            except GradcheckError as error:
                run_state.fail(error)
        for (target, _), plan in zip(targets_and_configs, planned):
            report = _report(run_state, target, plan, outcomes, compare_with, values, len(targets_and_configs))
            if report is not None:
                reports.append(report)
                if report.fails(output_settings.fail_on) and not values["exit_zero"]:
                    run_state.found()
        _write(run_state, reports, targets_and_configs, output_settings, values, plot_as)
        if run is not None:
            agreed = run.agree(run_state.exit_code)
            if agreed is None:
                run_state.failed()
            else:
                run_state.exit_code = agreed
    if len(targets_and_configs) > 1 and not silent:
        not_measured = len(targets_and_configs) - len(reports)
        outputs.print_summary(reports, not_measured, run_state.exit_code, output_settings, values["output"])
    run_state.exit()


def _targets_and_configs(targets: list[str] | None, file_config: Any) -> list[tuple[str, Any]]:
    """The targets named (else the config file's), each with its settings. A target named on the command line
    that the file also lists keeps the file's settings for it."""
    listed = {outputs.same_target(item.target): item for item in file_config.targets}
    chosen = [
        (target, file_config.for_target(listed[key]) if (key := outputs.same_target(target)) in listed else file_config)
        for target in targets or ()
    ] or [(item.target, file_config.for_target(item)) for item in file_config.targets]
    if not chosen:
        raise InvalidOptionError("no target: name a model (gradcheck scan model.py) or list targets in gradcheck.yaml.")
    return chosen


def _plan(ctx: typer.Context, values: dict, targets_and_configs: list, limits: Any) -> tuple[list, list]:
    """The jobs, and per target (its job's index, its baseline tolerance), or the error that refused it."""
    from gradcheck_cli.cli.jobs import ScanJob
    from gradcheck_cli.common.options import check_input_memory

    jobs: list = []
    planned: list = []
    for target, target_config in targets_and_configs:
        settings = Resolved(ctx, values, target_config)
        try:
            options = settings.scan_options()
            check_input_memory(options.inputs, limits.max_memory)
            tolerance = settings["baseline_tolerance"]
            jobs.append(ScanJob(target, options, settings.thresholds(), *settings.placement()))
            planned.append((len(jobs) - 1, tolerance))
        except GradcheckError as error:
            planned.append(error)
    return jobs, planned


def _report(
    run_state: Invocation, target: str, plan: Any, outcomes: dict, compare_with: Any, values: dict, count: int
) -> Any:
    """One target's report, compared with the baseline; or None, its error reported."""
    if isinstance(plan, GradcheckError):
        named = count > 1 and not str(plan).startswith(target)
        run_state.error(plan, prefix=f"{target}: " if named else "")
        return None
    index, tolerance = plan
    outcome = outcomes[index]
    if outcome.error is not None:
        run_state.error(outcome.error, details=outcome.details)
        return None
    try:
        if compare_with is not None:
            folder = Path(values["baseline"]).parent
            outputs.compare(outcome.report, compare_with, tolerance, values["silent"], folder)
    except GradcheckError as error:
        run_state.error(error)
        return None
    return outcome.report


def _write(run_state: Invocation, reports: list, targets_and_configs: list, settings: Any, values: dict, plot_as: Any):
    """The baseline, the report and the plots, each written whole or not at all."""
    try:
        if values["save_baseline"] and reports:
            from gradcheck_cli.report.baseline import save_baseline

            save_baseline(reports, Path(values["save_baseline"]))
        outputs.emit(reports, len(targets_and_configs) > 1, settings, values)
        if values["plot"] is not None:
            from gradcheck_cli.render.plot import plot_paths

            paths = plot_paths(values["plot"], [target for target, _ in targets_and_configs])
            for report in reports:
                outputs.write_plot(report, paths[report.target], plot_as, values["silent"])
    except GradcheckError as error:
        run_state.error(error)
