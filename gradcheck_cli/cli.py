"""The command line: a thin adapter over the library. The only module that prints or exits.

Exit codes (public API, see README): 0 healthy, 1 a finding at or above --fail-on, 2 usage or input error.
torch is imported inside the commands, never at start-up, so --help and --version stay instant.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from gradcheck_cli import __version__
from gradcheck_cli.choices import Activation, Arch, FailOn, Init, LossKind, Norm, Optimizer, OutputFormat
from gradcheck_cli.errors import GradcheckError, InvalidOptionError

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2

app = typer.Typer(
    name="gradcheck",
    help="Find vanishing and exploding gradients in PyTorch models: where, why, and what to change.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
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


# Options shared by the commands, declared once.
SeedOption = Annotated[int, typer.Option(help="Seed for the weights and the random batches.")]
PassesOption = Annotated[int, typer.Option(min=1, help="Forward/backward passes to aggregate (median).")]
FormatOption = Annotated[OutputFormat, typer.Option("--format", help="Report format on stdout.")]
AllLayersOption = Annotated[bool, typer.Option("--all-layers", help="Show every layer, not the condensed table.")]
FailOnOption = Annotated[FailOn, typer.Option(help="Lowest severity that makes the exit code 1.")]
VerifyOption = Annotated[
    bool, typer.Option("--verify", help="Apply each suggested fix to a copy of the model and measure it again.")
]
StepsOption = Annotated[
    int, typer.Option(min=0, help="Also train a copy for N optimizer steps and measure it after each (default 0).")
]
OptimizerOption = Annotated[Optimizer, typer.Option(help="Optimizer for --steps.")]
LrOption = Annotated[
    float,
    typer.Option(help="Learning rate you train with: for --steps and the learning-rate risk."),
]


def _fail(error: GradcheckError) -> NoReturn:
    """Every GradcheckError becomes one sentence on stderr and exit code 2, here and only here."""
    _report_error(error)
    raise typer.Exit(EXIT_USAGE)


def _report_error(error: GradcheckError, prefix: str = "") -> None:
    if _State.debug:
        import traceback

        traceback.print_exception(error, file=sys.stderr)
    stderr.print(f"[bold red]error:[/] {prefix}{error}", soft_wrap=True, markup=True, highlight=False)


def _quiet_torch_import() -> None:
    # torch warns on import when NumPy is absent; gradcheck does not use NumPy, so the warning is noise.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")


@app.command()
def demo(
    arch: Annotated[Arch, typer.Option(help="Preset architecture.")] = Arch.MLP,
    depth: Annotated[
        int | None,
        typer.Option(
            min=1, help="Hidden layers (mlp, cnn; default 50) or stacked recurrent layers (rnn, lstm; default 1)."
        ),
    ] = None,
    width: Annotated[
        int | None, typer.Option(min=1, help="Units, channels or hidden size (default 256 mlp, 128 cnn and rnn/lstm).")
    ] = None,
    activation: Annotated[
        Activation | None,
        typer.Option(help="Hidden activation (default sigmoid; rnn: tanh or relu, default tanh; lstm: fixed)."),
    ] = None,
    init: Annotated[Init, typer.Option(help="Weight initialization of the hidden layers.")] = Init.DEFAULT,
    gain: Annotated[
        float | None, typer.Option(help="Gain for --init normal (std gain/sqrt(fan_in)), xavier or orthogonal.")
    ] = None,
    norm: Annotated[
        Norm, typer.Option(help="Normalization in each hidden block: after the weight layer, or first with --residual.")
    ] = Norm.NONE,
    residual: Annotated[bool, typer.Option("--residual", help="Use pre-activation residual blocks.")] = False,
    seq_len: Annotated[int, typer.Option(min=1, help="Time steps of the rnn/lstm presets.")] = 50,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Batch size (default 64 mlp, 16 cnn, 32 rnn/lstm).")
    ] = None,
    seed: SeedOption = 0,
    passes: PassesOption = 3,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix/--no-fix",
            help="When there is an error finding, also measure the preset with the first fix that applies to it.",
        ),
    ] = True,
    verify: VerifyOption = False,
    steps: StepsOption = 0,
    optimizer: OptimizerOption = Optimizer.SGD,
    lr: LrOption = 1e-3,
    output_format: FormatOption = OutputFormat.TEXT,
    all_layers: AllLayersOption = False,
    fail_on: FailOnOption = FailOn.ERROR,
) -> None:
    """Build a preset deep model and watch its gradients vanish or explode, and the fix that cures it.

    [dim]Example: gradcheck demo --depth 50 --activation relu --init kaiming[/]
    """
    _quiet_torch_import()
    try:
        from gradcheck_cli.demo import run_demo
        from gradcheck_cli.presets import DemoSpec
        from gradcheck_cli.render.interface import RenderOptions, get_renderer

        spec = DemoSpec(
            arch=arch, depth=depth, width=width, activation=activation, init=init, gain=gain, norm=norm,
            residual=residual, seq_len=seq_len, batch_size=batch_size,
        ).resolved()  # fmt: skip
        with _progress(f"Probing {spec.describe()}"):
            report = run_demo(
                spec, seed=seed, passes=passes, thresholds=_thresholds(lr), try_fix=fix, verify=verify,
                steps=steps, optimizer=optimizer,
            )  # fmt: skip
    except GradcheckError as error:
        _fail(error)
    get_renderer(output_format).render(report, sys.stdout, RenderOptions(all_layers=all_layers))
    raise typer.Exit(EXIT_FINDINGS if report.fails(fail_on) else EXIT_OK)


@app.command()
def scan(
    targets: Annotated[
        list[str],
        typer.Argument(
            help="model.py, model.py:NAME, package.module:factory, or a saved model (TorchScript, torch.export).",
            show_default=False,
            metavar="TARGET",
        ),
    ],
    entry: Annotated[str | None, typer.Option(help="The name of the model, factory or class to use.")] = None,
    path: Annotated[
        list[str] | None, typer.Option("--path", help="Add a folder to sys.path while importing (repeatable).")
    ] = None,
    trust_pickle: Annotated[
        bool, typer.Option("--trust-pickle", help="Allow loading a pickled module (runs code from the file).")
    ] = False,
    input_shape: Annotated[
        list[str] | None,
        typer.Option("--input-shape", help="Shape of one input, e.g. 8,3,32,32 (repeatable for several inputs)."),
    ] = None,
    input_dtype: Annotated[
        str | None, typer.Option(help="dtype of the inputs: float32, float64, float16, bfloat16, int64, int32, bool.")
    ] = None,
    vocab_size: Annotated[int | None, typer.Option(min=1, help="Token models: draw token ids below this.")] = None,
    seq_len: Annotated[int | None, typer.Option(min=1, help="Sequence length for token and sequence inputs.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Batch size of inferred inputs (default 8).")] = None,
    loss: Annotated[
        LossKind | None, typer.Option(help="Loss to differentiate (default: the file's loss_fn, else ce or mse).")
    ] = None,
    seed: SeedOption = 0,
    passes: PassesOption = 3,
    verify: VerifyOption = False,
    steps: StepsOption = 0,
    optimizer: OptimizerOption = Optimizer.SGD,
    lr: LrOption = 1e-3,
    output_format: FormatOption = OutputFormat.TEXT,
    all_layers: AllLayersOption = False,
    fail_on: FailOnOption = FailOn.ERROR,
) -> None:
    """Scan your model: measure every layer's gradient health over a few passes and say what to change.

    [dim]Example: gradcheck scan examples/vanishing_mlp.py[/]
    """
    _quiet_torch_import()
    from gradcheck_cli.inputs import InputOptions, parse_shape
    from gradcheck_cli.render.interface import RenderOptions, get_renderer
    from gradcheck_cli.scan import ScanOptions, scan_target

    try:
        thresholds = _thresholds(lr)
        options = ScanOptions(
            entry=entry, paths=tuple(path or ()), trust_pickle=trust_pickle, loss=loss, passes=passes, seed=seed,
            verify=verify, steps=steps, optimizer=optimizer,
            inputs=InputOptions(
                shapes=tuple(parse_shape(text) for text in input_shape or ()), dtype=input_dtype,
                vocab_size=vocab_size, seq_len=seq_len, batch_size=batch_size,
            ),
        )  # fmt: skip
    except GradcheckError as error:
        _fail(error)
    reports, exit_code = [], EXIT_OK
    for target in targets:
        try:
            with _progress(f"Scanning {target}"):
                report = scan_target(target, options, thresholds)
        except GradcheckError as error:
            exit_code = EXIT_USAGE
            _report_error(error, prefix=f"{target}: " if len(targets) > 1 else "")
            continue
        reports.append(report)
        if report.fails(fail_on):
            exit_code = max(exit_code, EXIT_FINDINGS)
    renderer, render_options = get_renderer(output_format), RenderOptions(all_layers=all_layers)
    if len(targets) > 1:  # several targets: one output whose shape does not depend on how many loaded
        renderer.render_many(reports, sys.stdout, render_options)
    elif reports:
        renderer.render(reports[0], sys.stdout, render_options)
    raise typer.Exit(exit_code)


def _thresholds(lr: float):
    from gradcheck_cli.diagnosis import Thresholds

    if not lr > 0:
        raise InvalidOptionError(f"--lr must be a positive learning rate (got {lr:g}); try --lr 1e-3.")
    return Thresholds(lr=lr)


def _progress(message: str) -> contextlib.AbstractContextManager:
    """A spinner on stderr when it is a terminal; nothing otherwise (stdout carries only the report)."""
    if stderr.is_terminal:
        return stderr.status(message)
    return contextlib.nullcontext()


def main() -> None:
    app()
