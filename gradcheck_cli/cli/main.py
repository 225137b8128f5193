"""The command line: a thin adapter over the library. The only module that prints or exits.

Exit codes (public API, see README): 0 healthy, 1 a finding at or above --fail-on, 2 usage or input error.
torch is imported inside the commands, never at start-up, so --help and --version stay instant.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from gradcheck_cli import __version__
from gradcheck_cli.cli.help import HelpCommand, HelpGroup
from gradcheck_cli.common.choices import (
    Activation,
    Amp,
    Arch,
    Color,
    Device,
    FailOn,
    HistoryFormat,
    Init,
    LossKind,
    Norm,
    Optimizer,
    OutputFormat,
)
from gradcheck_cli.common.errors import GradcheckError, InvalidOptionError
from gradcheck_cli.common.limits import RANGES, check_range

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
# Seconds a target may run in its worker before it is stopped (--timeout): long enough for a large model's
# few passes on a CPU, short enough that a hang does not eat a CI job's hours.
DEFAULT_TIMEOUT = 900.0

app = typer.Typer(
    name="gradcheck",
    help="Find vanishing and exploding gradients in PyTorch models: where, why, and what to change.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    cls=HelpGroup,
)
stderr = Console(stderr=True, highlight=False)


class _State:
    debug = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gradcheck {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Also print the traceback of an error (exit code stays 2).")
    ] = False,
) -> None:
    _State.debug = debug


# The panels --help groups the options of demo and scan in: each is a table of its own, so a long option name
# widens only its own and the help text keeps room at 80 columns and less (issue 23).
PRESET_PANEL, MODEL_PANEL, MEASUREMENT_PANEL = "Preset", "Model and inputs", "Measurement"
DEVICE_PANEL, OUTPUT_PANEL, EXIT_PANEL = "Device and limits", "Output", "Exit code"
BASELINE_PANEL, CONFIG_PANEL = "Baseline", "Configuration"

# Options shared by the commands, declared once.
SeedOption = Annotated[
    int,
    typer.Option(
        min=0,
        max=RANGES["seed"].maximum,
        help="Seed for the weights and the random batches.",
        rich_help_panel=MEASUREMENT_PANEL,
    ),
]
PassesOption = Annotated[
    int,
    typer.Option(
        min=1,
        max=RANGES["passes"].maximum,
        help="Forward/backward passes to aggregate (median).",
        rich_help_panel=MEASUREMENT_PANEL,
    ),
]
FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", envvar="GRADCHECK_FORMAT", help="Report format.", rich_help_panel=OUTPUT_PANEL),
]
AllLayersOption = Annotated[
    bool,
    typer.Option("--all-layers", help="Show every layer, not the condensed table.", rich_help_panel=OUTPUT_PANEL),
]
FailOnOption = Annotated[
    FailOn, typer.Option(help="Lowest severity that makes the exit code 1.", rich_help_panel=EXIT_PANEL)
]
OutputOption = Annotated[
    str | None,
    typer.Option(
        "--output", "-o", help="Write the report to this file (whole, or not at all).", rich_help_panel=OUTPUT_PANEL
    ),
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Text: print the verdict line, the findings (each with its first cause and fix) and one line on the "
        "fixes tried; no chart or tables.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
SilentOption = Annotated[
    bool,
    typer.Option("--silent", "-s", help="Print nothing; the exit code says it all.", rich_help_panel=OUTPUT_PANEL),
]
ColorOption = Annotated[Color, typer.Option("--color", help="Colour in the text report.", rich_help_panel=OUTPUT_PANEL)]
ExitZeroOption = Annotated[
    bool,
    typer.Option(
        "--exit-zero",
        help="Exit 0 even when there are findings (errors in use still exit 2).",
        rich_help_panel=EXIT_PANEL,
    ),
]
ConfigOption = Annotated[
    str | None, typer.Option("--config", help="Config file to use (default: gradcheck.yaml, .gradcheck.yaml or "
                             "pyproject.toml \\[tool.gradcheck], searched from here upward).",
                             rich_help_panel=CONFIG_PANEL)
]  # fmt: skip
IsolatedOption = Annotated[
    bool, typer.Option("--isolated", help="Ignore every config file.", rich_help_panel=CONFIG_PANEL)
]
VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Text: the whole report (layer table, each finding's evidence, every cause and fix); and say which "
        "config file is used.",
        rich_help_panel=CONFIG_PANEL,
    ),
]
IgnoreOption = Annotated[
    list[str] | None,
    typer.Option(
        "--ignore",
        help="Measure but do not judge layers matching this glob, e.g. 'encoder.*' (repeatable).",
        rich_help_panel=MEASUREMENT_PANEL,
    ),
]
VerifyOption = Annotated[
    bool,
    typer.Option(
        "--verify",
        help="Apply each suggested fix to a copy of the model and measure it again.",
        rich_help_panel=MEASUREMENT_PANEL,
    ),
]
StepsOption = Annotated[
    int,
    typer.Option(
        min=0,
        max=RANGES["steps"].maximum,
        help="Also train a copy for N optimizer steps and measure it after each.",
        rich_help_panel=MEASUREMENT_PANEL,
    ),
]
OptimizerOption = Annotated[Optimizer, typer.Option(help="Optimizer for --steps.", rich_help_panel=MEASUREMENT_PANEL)]
DeviceOption = Annotated[
    Device,
    typer.Option(help="Where the passes run: cuda when torch can use it (auto), or cpu.", rich_help_panel=DEVICE_PANEL),
]
AmpOption = Annotated[
    Amp | None,
    typer.Option(
        help="Run the passes under autocast in this dtype and report, per layer, the gradient elements fp16 "
        "cannot hold (fp16: with a loss scale, as torch.amp.GradScaler would).",
        rich_help_panel=DEVICE_PANEL,
    ),
]
PlotOption = Annotated[
    str | None,
    typer.Option(
        "--plot",
        help="Also draw the gradient-flow figure to this .png, .svg or .html file (needs matplotlib: "
        "pip install 'gradcheck-cli\\[plot]'). Several scan targets: one file each, FILE-<target>.png.",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
LrOption = Annotated[
    float,
    typer.Option(
        help="Learning rate you train with: for --steps and the learning-rate risk.", rich_help_panel=MEASUREMENT_PANEL
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        min=0,
        max=RANGES["timeout"].maximum,
        help="Seconds each target may take before it is stopped and reported (exit 2); 0: no limit.",
        rich_help_panel=DEVICE_PANEL,
    ),
]
MaxMemoryOption = Annotated[
    str | None,
    typer.Option(
        "--max-memory",
        help="Memory the model's process may use, e.g. 8G or 50%; past it the target is stopped and reported "
        "(exit 2). Default: 75% of this machine's (or container's) memory.",
        show_default=False,
        rich_help_panel=DEVICE_PANEL,
    ),
]


def _fail(error: GradcheckError) -> NoReturn:
    """Every GradcheckError becomes one sentence on stderr and exit code 2, here and only here."""
    _report_error(error)
    raise typer.Exit(EXIT_USAGE)


def _report_error(error: GradcheckError, prefix: str = "") -> None:
    if _State.debug:
        import traceback

        traceback.print_exception(error, file=sys.stderr)
    _print_error(f"{prefix}{error}")


def _print_error(message: str) -> None:
    """One line on stderr. The message carries the user's text (layer names, their exception's words), shown
    with control characters escaped (render/names.py), and Rich-escaped so "[plot]" is not taken for markup."""
    from gradcheck_cli.render.names import shown

    stderr.print(f"[bold red]error:[/] {escape(shown(message, None))}", soft_wrap=True, markup=True, highlight=False)


@app.command(cls=HelpCommand)
def demo(
    ctx: typer.Context,
    arch: Annotated[Arch, typer.Option(help="Preset architecture.", rich_help_panel=PRESET_PANEL)] = Arch.MLP,
    depth: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=RANGES["depth"].maximum,
            help="Hidden layers (mlp, cnn; default 50) or stacked recurrent layers (rnn, lstm; default 1).",
            rich_help_panel=PRESET_PANEL,
        ),
    ] = None,
    width: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=RANGES["width"].maximum,
            help="Units, channels or hidden size (default 256 mlp, 128 cnn and rnn/lstm).",
            rich_help_panel=PRESET_PANEL,
        ),
    ] = None,
    activation: Annotated[
        Activation | None,
        typer.Option(
            help="Hidden activation (default sigmoid; rnn: tanh or relu, default tanh; lstm: fixed).",
            rich_help_panel=PRESET_PANEL,
        ),
    ] = None,
    init: Annotated[
        Init, typer.Option(help="Weight initialization of the hidden layers.", rich_help_panel=PRESET_PANEL)
    ] = Init.DEFAULT,
    gain: Annotated[
        float | None,
        typer.Option(
            help="Gain for --init normal (std gain/sqrt(fan_in)), xavier or orthogonal.", rich_help_panel=PRESET_PANEL
        ),
    ] = None,
    norm: Annotated[
        Norm,
        typer.Option(
            help="Normalization in each hidden block: after the weight layer, or first with --residual.",
            rich_help_panel=PRESET_PANEL,
        ),
    ] = Norm.NONE,
    residual: Annotated[
        bool,
        typer.Option(
            "--residual",
            help="Use pre-activation residual blocks (rnn, lstm: residual connections between the stacked layers).",
            rich_help_panel=PRESET_PANEL,
        ),
    ] = False,
    seq_len: Annotated[
        int,
        typer.Option(
            min=1,
            max=RANGES["seq_len_demo"].maximum,
            help="Time steps of the rnn/lstm presets.",
            rich_help_panel=PRESET_PANEL,
        ),
    ] = 50,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=RANGES["batch_size"].maximum,
            help="Batch size (default 64 mlp, 16 cnn, 32 rnn/lstm).",
            rich_help_panel=PRESET_PANEL,
        ),
    ] = None,
    seed: SeedOption = 0,
    passes: PassesOption = 3,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix/--no-fix",
            help="When there is an error finding, also measure the preset with each suggested fix that applies, in order, until one cures.",
            rich_help_panel=MEASUREMENT_PANEL,
        ),
    ] = True,
    verify: VerifyOption = False,
    steps: StepsOption = 0,
    optimizer: OptimizerOption = Optimizer.SGD,
    lr: LrOption = 1e-3,
    ignore: IgnoreOption = None,
    output_format: FormatOption = OutputFormat.TEXT,
    output: OutputOption = None,
    plot: PlotOption = None,
    device: DeviceOption = Device.AUTO,
    amp: AmpOption = None,
    all_layers: AllLayersOption = False,
    quiet: QuietOption = False,
    silent: SilentOption = False,
    color: ColorOption = Color.AUTO,
    fail_on: FailOnOption = FailOn.ERROR,
    exit_zero: ExitZeroOption = False,
    config: ConfigOption = None,
    isolated: IsolatedOption = False,
    verbose: VerboseOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    max_memory: MaxMemoryOption = None,
) -> None:
    """Build a preset deep model and watch its gradients vanish or explode, and the fix that cures it.

    [dim]Example: gradcheck demo --depth 50 --activation relu --init kaiming[/]
    """
    try:
        from gradcheck_cli.cli.jobs import DemoJob

        settings = _Settings(ctx, _load_config(config, isolated, verbose))
        _check_output(output)
        plot_as = _check_plot(plot)
        if gain is not None:
            check_range("gain", gain)
        spec = {
            "arch": arch, "depth": depth, "width": width, "activation": activation, "init": init, "gain": gain,
            "norm": norm, "residual": residual, "seq_len": seq_len, "batch_size": batch_size,
        }  # fmt: skip
        run = {
            "seed": settings.get("seed", seed), "passes": settings.get("passes", passes),
            "thresholds": settings.thresholds(lr), "try_fix": fix, "verify": settings.get("verify", verify),
            "steps": settings.get("steps", steps), "optimizer": settings.get("optimizer", optimizer),
            "ignore": tuple(settings.get("ignore", tuple(ignore or ()))),
        }  # fmt: skip
        job = DemoJob(spec, run, *_placement(settings, device, amp))
        limits = _limits(settings, timeout, max_memory)
        output_settings = settings.output(output_format, fail_on)
        with _progress(f"Probing the {arch.value} preset", silent), _worker_run([job], limits, silent) as run:
            (outcome,) = list(run.outcomes())
        if outcome.error is not None:
            _report_worker_error(outcome)
            raise typer.Exit(EXIT_USAGE)
        report = outcome.report
        _emit([report], False, output_settings, output, all_layers, quiet, silent, color, verbose)
        if plot is not None:
            _write_plot(report, Path(plot), plot_as, silent)
    except GradcheckError as error:
        _fail(error)
    failing = report.fails(output_settings.fail_on)
    raise typer.Exit(EXIT_FINDINGS if failing and not exit_zero else EXIT_OK)


@app.command(cls=HelpCommand)
def scan(
    ctx: typer.Context,
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help="model.py, model.py:NAME, package.module:factory, or a saved model (TorchScript, torch.export); "
            "none: the targets of the config file.",
            show_default=False,
            metavar="TARGET",
        ),
    ] = None,
    entry: Annotated[
        str | None, typer.Option(help="The name of the model, factory or class to use.", rich_help_panel=MODEL_PANEL)
    ] = None,
    path: Annotated[
        list[str] | None,
        typer.Option(
            "--path", help="Add a folder to sys.path while importing (repeatable).", rich_help_panel=MODEL_PANEL
        ),
    ] = None,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Allow loading a pickled module (runs code from the file).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = False,
    input_shape: Annotated[
        list[str] | None,
        typer.Option(
            "--input-shape",
            help="Shape of one input, e.g. 8,3,32,32 (repeatable for several inputs).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = None,
    input_dtype: Annotated[
        str | None,
        typer.Option(
            help="dtype of the inputs: float32, float64, float16, bfloat16, int64, int32, bool.",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = None,
    vocab_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=RANGES["vocab_size"].maximum,
            help="Token models: draw token ids below this.",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = None,
    seq_len: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=RANGES["seq_len"].maximum,
            help="Sequence length for token and sequence inputs.",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=RANGES["batch_size"].maximum,
            help="Batch size of inferred inputs (default 8).",
            rich_help_panel=MODEL_PANEL,
        ),
    ] = None,
    loss: Annotated[
        LossKind | None,
        typer.Option(
            help="Loss to differentiate (default: the file's loss_fn, else ce or mse).", rich_help_panel=MODEL_PANEL
        ),
    ] = None,
    seed: SeedOption = 0,
    passes: PassesOption = 3,
    verify: VerifyOption = False,
    steps: StepsOption = 0,
    optimizer: OptimizerOption = Optimizer.SGD,
    lr: LrOption = 1e-3,
    ignore: IgnoreOption = None,
    save_baseline: Annotated[
        str | None,
        typer.Option(
            "--save-baseline", help="Record every layer's figures in this file.", rich_help_panel=BASELINE_PANEL
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline", help="Fail when gradient health regressed against this file.", rich_help_panel=BASELINE_PANEL
        ),
    ] = None,
    baseline_tolerance: Annotated[
        float,
        typer.Option(
            help="Factor by which a layer's gradient ratio may move before --baseline fails.",
            rich_help_panel=BASELINE_PANEL,
        ),
    ] = 10.0,
    output_format: FormatOption = OutputFormat.TEXT,
    output: OutputOption = None,
    plot: PlotOption = None,
    device: DeviceOption = Device.AUTO,
    amp: AmpOption = None,
    distributed: Annotated[
        bool,
        typer.Option(
            "--distributed",
            help="Run in a torchrun job (on by itself under torchrun): each process measures its slice of the "
            "batch, the figures are summed over processes, the first prints the report.",
            rich_help_panel=DEVICE_PANEL,
        ),
    ] = False,
    fsdp: Annotated[
        bool,
        typer.Option(
            "--fsdp",
            help="With --distributed: shard the model with FSDP2, one top-level block at a time, then the root.",
            rich_help_panel=DEVICE_PANEL,
        ),
    ] = False,
    all_layers: AllLayersOption = False,
    quiet: QuietOption = False,
    silent: SilentOption = False,
    color: ColorOption = Color.AUTO,
    fail_on: FailOnOption = FailOn.ERROR,
    exit_zero: ExitZeroOption = False,
    config: ConfigOption = None,
    isolated: IsolatedOption = False,
    verbose: VerboseOption = False,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    max_memory: MaxMemoryOption = None,
) -> None:
    """Scan your model: measure every layer's gradient health over a few passes and say what to change.

    [dim]Example: gradcheck scan examples/vanishing_mlp.py[/]
    """
    from gradcheck_cli.cli.jobs import Distributed, ScanJob
    from gradcheck_cli.common.options import InputOptions, ScanOptions, check_input_memory, parse_shape

    try:
        rank = _torchrun_rank(ctx, distributed, fsdp)
        file_config = _load_config(config, isolated, verbose)
        # A target named on the command line that the file also lists keeps the file's settings for it.
        listed = {_same_target(item.target): item for item in file_config.targets}
        targets_and_configs = [
            (
                target,
                file_config.for_target(listed[_same_target(target)]) if _same_target(target) in listed else file_config,
            )
            for target in targets or ()
        ] or [(item.target, file_config.for_target(item)) for item in file_config.targets]
        if not targets_and_configs:
            raise InvalidOptionError(
                "no target: name a model (gradcheck scan model.py) or list targets in gradcheck.yaml."
            )
        top_settings = _Settings(ctx, file_config)
        output_settings = top_settings.output(output_format, fail_on)
        _check_output(output)
        compare_with = _load_baseline(baseline)
        plot_as = _check_plot(plot)
        limits = _limits(top_settings, timeout, max_memory)
        placement_device = top_settings.get("device", device)
        spread = None if rank is None else Distributed(fsdp, placement_device.value)
    except GradcheckError as error:
        _fail(error)
    if rank:  # the first process writes the report, baseline and plot
        silent, output, save_baseline, plot = True, None, None, None
    jobs, planned = [], []  # per target: (its job's index, its baseline tolerance), or the error that refused it
    for target, target_config in targets_and_configs:
        settings = _Settings(ctx, target_config)
        try:
            shapes = settings.get("input_shape", tuple(parse_shape(text) for text in input_shape or ()))
            options = ScanOptions(
                entry=settings.get("entry", entry), paths=tuple(settings.get("paths", tuple(path or ()), "path")),
                trust_pickle=settings.get("trust_pickle", trust_pickle), loss=settings.get("loss", loss),
                passes=settings.get("passes", passes), seed=settings.get("seed", seed),
                verify=settings.get("verify", verify), steps=settings.get("steps", steps),
                optimizer=settings.get("optimizer", optimizer),
                ignore=tuple(settings.get("ignore", tuple(ignore or ()))),
                inputs=InputOptions(
                    shapes=tuple(shapes), dtype=settings.get("input_dtype", input_dtype),
                    vocab_size=settings.get("vocab_size", vocab_size), seq_len=settings.get("seq_len", seq_len),
                    batch_size=settings.get("batch_size", batch_size),
                ),
            )  # fmt: skip
            check_input_memory(options.inputs, limits.max_memory)
            tolerance = settings.get("baseline_tolerance", baseline_tolerance)
            check_range("baseline_tolerance", tolerance)
            jobs.append(ScanJob(target, options, settings.thresholds(lr), *_placement(settings, device, amp)))
            planned.append((len(jobs) - 1, tolerance))
        except GradcheckError as error:
            planned.append(error)
    reports, exit_code, outcomes, run = [], EXIT_OK, {}, None
    with contextlib.ExitStack() as stack:
        if jobs:
            label = jobs[0].target if len(jobs) == 1 else f"{len(jobs)} targets"
            try:
                with _progress(f"Scanning {label}", silent):
                    run = stack.enter_context(_worker_run(jobs, limits, silent, spread))
                    outcomes = {outcome.index: outcome for outcome in run.outcomes()}
            except GradcheckError as error:
                _fail(error)
        for (target, _), plan in zip(targets_and_configs, planned):
            if isinstance(plan, GradcheckError):
                exit_code = EXIT_USAGE
                named = len(targets_and_configs) > 1 and not str(plan).startswith(target)
                _report_error(plan, prefix=f"{target}: " if named else "")
                continue
            index, tolerance = plan
            outcome = outcomes[index]
            if outcome.error is not None:
                exit_code = EXIT_USAGE
                _report_worker_error(outcome)
                continue
            report = outcome.report
            try:
                if compare_with is not None:
                    _compare(report, compare_with, tolerance, silent, Path(baseline).parent)
            except GradcheckError as error:
                exit_code = EXIT_USAGE
                _report_error(error)
                continue
            reports.append(report)
            if report.fails(output_settings.fail_on) and not exit_zero:
                exit_code = max(exit_code, EXIT_FINDINGS)
        try:
            if save_baseline and reports:
                from gradcheck_cli.report.baseline import save_baseline as save

                save(reports, Path(save_baseline))
            many = len(targets_and_configs) > 1
            _emit(reports, many, output_settings, output, all_layers, quiet, silent, color, verbose)
            if plot is not None:
                from gradcheck_cli.render.plot import plot_paths

                paths = plot_paths(plot, [target for target, _ in targets_and_configs])
                for report in reports:
                    _write_plot(report, paths[report.target], plot_as, silent)
        except GradcheckError as error:
            _report_error(error)
            exit_code = EXIT_USAGE
        if run is not None:
            exit_code = run.agree(exit_code)
    if len(targets_and_configs) > 1 and not silent:
        _print_summary(reports, len(targets_and_configs) - len(reports), exit_code, output_settings, output)
    raise typer.Exit(exit_code)


@app.command(name="config", cls=HelpCommand)
def config_command(
    show: Annotated[
        bool, typer.Option("--show", help="Print the effective configuration.", rich_help_panel=CONFIG_PANEL)
    ] = False,
    config: ConfigOption = None,
    isolated: IsolatedOption = False,
) -> None:
    """Show which configuration file applies here and what it sets.

    [dim]Example: gradcheck config --show[/]
    """
    try:
        loaded = _load_config(config, isolated, verbose=False)
    except GradcheckError as error:
        _fail(error)
    typer.echo(f"# {loaded.describe()}")
    if show:
        text = loaded.to_yaml().strip()
        typer.echo(text if text not in ("", "{}") else "# (every setting at its default)")
    raise typer.Exit(EXIT_OK)


@app.command(cls=HelpCommand)
def report(
    history: Annotated[
        str, typer.Argument(help="A history written by gradcheck_cli.Monitor (JSON lines).", show_default=False)
    ],
    step: Annotated[
        int | None,
        typer.Option(
            help="Show the layers at this recorded step (default: the first with a problem, else the last).",
            rich_help_panel=OUTPUT_PANEL,
        ),
    ] = None,
    output_format: Annotated[
        HistoryFormat, typer.Option("--format", help="Report format.", rich_help_panel=OUTPUT_PANEL)
    ] = HistoryFormat.TEXT,
    all_layers: AllLayersOption = False,
    color: ColorOption = Color.AUTO,
) -> None:
    """Report on a training run's gradient history: its problems, where each began, and a chart over steps.

    [dim]Example: gradcheck report history.jsonl[/]
    """
    try:
        from gradcheck_cli.monitor.history import read_history, summarize_history
        from gradcheck_cli.render.history import get_history_renderer

        summary = summarize_history(read_history(Path(history)), history, step)
        colour = {Color.ALWAYS: True, Color.NEVER: False}.get(color)
        get_history_renderer(output_format).render(summary, sys.stdout, color=colour, all_layers=all_layers)
    except GradcheckError as error:
        _fail(error)
    raise typer.Exit(EXIT_FINDINGS if summary.problems else EXIT_OK)


class _Settings:
    """Command line > config file > defaults: a value counts as given when it did not come from its default."""

    def __init__(self, ctx: typer.Context, config: Any):
        self.ctx, self.config = ctx, config

    def given(self, name: str) -> bool:
        source = self.ctx.get_parameter_source(name)
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    def get(self, name: str, cli_value: Any, parameter: str | None = None) -> Any:
        return self.config.setting(name, cli_value, self.given(parameter or name), cli_value)

    def thresholds(self, lr: float):
        from gradcheck_cli.judge.diagnosis import Thresholds

        effective = lr if self.given("lr") else None
        values = self.config.thresholds(effective)
        if "lr" not in values:
            values["lr"] = lr
        check_range("lr", values["lr"])
        return Thresholds(**values)

    def output(self, output_format: OutputFormat, fail_on: FailOn) -> _OutputSettings:
        chosen_format = output_format if self.given("output_format") else self.config.format or output_format
        chosen_fail_on = fail_on if self.given("fail_on") else self.config.fail_on or fail_on
        return _OutputSettings(chosen_format, chosen_fail_on)


class _OutputSettings:
    def __init__(self, output_format: OutputFormat, fail_on: FailOn):
        self.format, self.fail_on = output_format, fail_on


def _load_config(path: str | None, isolated: bool, verbose: bool):
    from gradcheck_cli.config.config import load_config

    loaded = load_config(path, isolated=isolated)
    if verbose:
        stderr.print(loaded.describe(), highlight=False, markup=False)
    for notice in loaded.notices:
        stderr.print(f"note: {notice}", highlight=False, markup=False)
    return loaded


def _same_target(target: str) -> str:
    """A target as a comparable key: file paths resolved, package.module:attr as written."""
    location, colon, name = target.partition(":")
    if location.endswith(".py") or Path(location).exists():
        return str(Path(location).resolve()) + colon + name
    return target


def _load_baseline(path: str | None) -> dict | None:
    if path is None:
        return None
    from gradcheck_cli.report.baseline import load_baseline

    return load_baseline(Path(path))


def _compare(report: Any, entries: dict, tolerance: float, silent: bool, folder: Path) -> None:
    from gradcheck_cli.report.baseline import apply_baseline, baseline_key, compare

    key = baseline_key(report, folder)
    entry = entries.get(key)
    if entry is None:
        if not silent:
            stderr.print(
                f"note: {key} is not in the baseline; nothing to compare (add it with --save-baseline).",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        return
    apply_baseline(report, compare(report, entry, tolerance))


def _emit(reports, many, settings, output, all_layers, quiet, silent, color, verbose) -> None:
    """Render once; write to --output (whole, or not at all) and/or stdout (unless --silent)."""
    from gradcheck_cli.render.interface import RenderOptions, get_renderer

    colour = {Color.ALWAYS: True, Color.NEVER: False}.get(color)
    if output is not None:
        colour = False if colour is None else colour  # a file gets no escape codes unless asked
    options = RenderOptions(all_layers=all_layers, quiet=quiet, verbose=verbose, color=colour, fail_on=settings.fail_on)
    renderer = get_renderer(settings.format)
    if output is None and silent:
        return
    if not reports and not many:
        return  # the one target failed (exit 2): no report, and no empty file for a later step to read
    # To the terminal directly, so Rich sees its width and whether it takes colour; to a file, in full first.
    stream = io.StringIO() if output is not None else sys.stdout
    if many:  # several targets: one output whose shape does not depend on how many loaded
        renderer.render_many(reports, stream, options)
    else:
        renderer.render(reports[0], stream, options)
    if output is not None:
        from gradcheck_cli.common.files import write_whole

        try:
            write_whole(Path(output), stream.getvalue())
        except OSError as error:
            raise GradcheckError(f"cannot write the report to {output}: {error.strerror or error}.") from error


def _print_summary(reports: list, not_measured: int, exit_code: int, settings: _OutputSettings, output) -> None:
    """Several targets: one line of verdicts and the exit code, after the report when it is text on stdout,
    else on stderr (pip-audit's way), so a JSON or SARIF document stays whole."""
    from gradcheck_cli.render.text import targets_summary

    line = targets_summary(reports, not_measured, exit_code)
    if settings.format is OutputFormat.TEXT and output is None:
        typer.echo(line)
    else:
        stderr.print(line, highlight=False, markup=False, soft_wrap=True)


def _placement(settings: _Settings, device: Device, amp: Amp | None) -> tuple[str, str | None]:
    """--device and --amp (or the config file's), as the worker takes them."""
    chosen = settings.get("amp", amp)
    return settings.get("device", device).value, chosen.value if chosen else None


def _limits(settings: _Settings, timeout: float, max_memory: str | None) -> Any:
    """--timeout and --max-memory (or the config file's); the memory default is a share of this machine's."""
    from gradcheck_cli.cli.jobs import Limits
    from gradcheck_cli.common.limits import default_memory, parse_memory

    seconds = settings.get("timeout", timeout)
    memory = settings.get("max_memory", parse_memory(max_memory) if max_memory is not None else None, "max_memory")
    return Limits(timeout=seconds or None, max_memory=memory if memory is not None else default_memory())


@contextlib.contextmanager
def _worker_run(jobs: list, limits: Any, silent: bool, spread: Any = None) -> Any:
    """The jobs in worker processes (gradcheck_cli/cli/isolation.py); what they print reaches stderr, labelled."""
    from gradcheck_cli.cli.isolation import WorkerRun
    from gradcheck_cli.cli.jobs import Request
    from gradcheck_cli.render.names import shown

    def relay(label: str, line: str) -> None:
        if not silent:  # what the model prints, shown but never obeyed: no escape sequence, no workflow command
            stderr.print(f"{shown(label, None)}| {shown(line, None)}", markup=False, highlight=False, soft_wrap=True)

    with WorkerRun(Request(jobs, limits, spread), relay) as run:
        yield run


def _report_worker_error(outcome: Any) -> None:
    if _State.debug and outcome.details:
        sys.stderr.write(outcome.details)
    _print_error(outcome.error)


def _torchrun_rank(ctx: typer.Context, distributed: bool, fsdp: bool) -> int | None:
    """--distributed, or torchrun's environment: this process's rank, else None. Every process after the
    first prints nothing for the rest of the command (no warnings either): the first prints for all."""
    from gradcheck_cli.load.torchrun import torchrun_rank

    rank = torchrun_rank(distributed, fsdp)
    if rank:
        ctx.with_resource(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        ctx.with_resource(_muted(stderr))
    return rank


@contextlib.contextmanager
def _muted(console: Console) -> Any:
    quiet, console.quiet = console.quiet, True
    try:
        yield
    finally:
        console.quiet = quiet


def _check_output(path: str | None) -> None:
    if path is not None and not path.strip():
        raise InvalidOptionError("--output needs a file name; leave it out to print the report.")


def _check_plot(path: str | None) -> Any:
    """--plot: its file type and matplotlib are checked before anything is measured."""
    if path is None:
        return None
    from gradcheck_cli.render.plot import plot_format, require_matplotlib

    chosen = plot_format(path)
    require_matplotlib()
    return chosen


def _write_plot(report: Any, path: Path, plot_as: Any, silent: bool) -> None:
    from gradcheck_cli.common.files import write_whole
    from gradcheck_cli.render.plot import render_plot

    try:
        write_whole(path, render_plot(report, plot_as))
    except OSError as error:
        raise GradcheckError(f"cannot write the plot to {path}: {error.strerror or error}.") from error
    if not silent:
        stderr.print(f"plot: {path}", highlight=False, markup=False, soft_wrap=True)


def _progress(message: str, silent: bool = False) -> contextlib.AbstractContextManager:
    """A spinner on stderr when it is a terminal; nothing otherwise (stdout carries only the report)."""
    if stderr.is_terminal and not silent:
        return stderr.status(message)
    return contextlib.nullcontext()


def main() -> None:
    app()
