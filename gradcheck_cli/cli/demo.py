"""``gradcheck demo``: a preset deep model measured in a worker process, with the fix that cures it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from gradcheck_cli.cli import outputs
from gradcheck_cli.cli.invocation import invocation
from gradcheck_cli.cli.parameters import takes_settings
from gradcheck_cli.cli.resolve import Resolved, load_config
from gradcheck_cli.common.errors import GradcheckError

# The options that make the preset (presets.DemoSpec's fields; DemoSpec imports torch).
SPEC_OPTIONS = ("arch", "depth", "width", "activation", "init", "gain", "norm", "residual", "seq_len", "batch_size")


@takes_settings("demo")
def demo(ctx: typer.Context, **values: Any) -> None:
    """Build a preset deep model and watch its gradients vanish or explode, and the fix that cures it.

    [dim]Example: gradcheck demo --depth 50 --activation relu --init kaiming[/]
    """
    from gradcheck_cli.cli.jobs import DemoJob

    run_state = invocation(ctx)
    silent = values["silent"]
    try:
        settings = Resolved(ctx, values, load_config(values["config"], values["isolated"], values["verbose"]))
        outputs.check_output(values["output"])
        plot_as = outputs.check_plot(values["plot"])
        spec = {name: settings[name] for name in SPEC_OPTIONS}
        run = {
            "seed": settings["seed"], "passes": settings["passes"], "thresholds": settings.thresholds(),
            "try_fix": values["fix"], "verify": settings["verify"], "steps": settings["steps"],
            "optimizer": settings["optimizer"], "ignore": tuple(settings["ignore"]),
        }  # fmt: skip
        job = DemoJob(spec, run, *settings.placement())
        limits = settings.limits()
        output_settings = settings.output()
        label = f"Probing the {values['arch'].value} preset"
        with outputs.progress(label, silent), outputs.worker_run([job], limits, silent) as worker:
            (outcome,) = list(worker.outcomes())
        if outcome.error is not None:
            run_state.error(outcome.error, details=outcome.details)
            run_state.exit()
        report = outcome.report
        outputs.emit([report], False, output_settings, values)
        if values["plot"] is not None:
            outputs.write_plot(report, Path(values["plot"]), plot_as, silent)
    except GradcheckError as error:
        run_state.fail(error)
    if report.fails(output_settings.fail_on) and not values["exit_zero"]:
        run_state.found()
    run_state.exit()
