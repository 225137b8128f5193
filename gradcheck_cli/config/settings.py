"""Every setting of gradcheck, declared once: the table the command line and the config file are built from.

Each entry says its command-line parameter and the commands that take it, its type, default, help and panel,
its range (``limits.RANGES``), its config key and that key's check, and how ``gradcheck config --show``
writes it. From this table come the options of every command (cli/parameters.py builds the commands'
signatures), the keys a config file may set and their checks (config/reading.py), the fields of ``Config``
(config/config.py) and ``config --show``. Adding a setting is one entry here plus its use (a ScanOptions
field, say, and the line of cli/ that fills it). No torch and no yaml here: the CLI imports this at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

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
from gradcheck_cli.common.limits import parse_memory
from gradcheck_cli.common.options import DTYPE_BYTES, parse_shape
from gradcheck_cli.config import checks
from gradcheck_cli.config.nodes import Check

# The panels --help groups the options in: each is a table of its own, so a long option name widens only its
# own and the help text keeps room at 80 columns and less (issue 23).
PRESET_PANEL, MODEL_PANEL, MEASUREMENT_PANEL = "Preset", "Model and inputs", "Measurement"
DEVICE_PANEL, OUTPUT_PANEL, EXIT_PANEL = "Device and limits", "Output", "Exit code"
BASELINE_PANEL, CONFIG_PANEL = "Baseline", "Configuration"

# Seconds a target may run in its worker before it is stopped (--timeout): long enough for a large model's
# few passes on a CPU, short enough that a hang does not eat a CI job's hours.
DEFAULT_TIMEOUT = 900.0


@dataclass(frozen=True)
class Setting:
    """One parameter of the command line, one key of the config file, or both."""

    name: str  # the command function's parameter
    commands: tuple[str, ...]  # the commands that take it on the command line; () for a config key only
    annotation: Any = None  # the parameter's type, as Typer reads it
    default: Any = None  # the command line's default
    help: str = ""
    panel: str | None = None  # the --help panel
    flags: tuple[str, ...] = ()  # the option's names; (): Typer's own, from ``name`` (seq_len: --seq-len)
    bounds: str | None = None  # its range in limits.RANGES; Typer holds the option to it where it can
    argument: bool = False  # a positional argument rather than an option
    typer: dict[str, Any] = field(default_factory=dict)  # other typer.Option keywords (envvar, metavar, ...)
    key: str | None = None  # the config file's key; None: the command line only
    check: Check | None = None  # the key's check; None: read by config/reading.py itself (thresholds, targets)
    per_target: bool = True  # a target of ``targets`` may set the key too
    from_cli: Callable[[Any], Any] | None = None  # the option's value into the config value's form
    shown: Callable[[Any], Any] | None = None  # the config value as ``config --show`` writes it (else plain)

    @property
    def attribute(self) -> str:
        """The field of config.Settings (or Config) that holds the key's value: the key in snake_case."""
        key = self.key or self.name
        return {"path": "paths", "thresholds": "threshold_values"}.get(key, key.replace("-", "_"))

    def show(self, value: Any) -> Any:
        if self.shown is not None:
            return self.shown(value)
        if isinstance(value, Enum):
            return value.value
        return list(value) if isinstance(value, tuple) else value


def _given_list(values: list[str] | None) -> tuple[str, ...]:
    return tuple(values or ())


def _shapes(texts: list[str] | None) -> tuple[tuple[int, ...], ...]:
    return tuple(parse_shape(text) for text in texts or ())


def _memory(text: str | None) -> int | None:
    return parse_memory(text) if text is not None else None


def _shapes_text(shapes: tuple[tuple[int, ...], ...]) -> list[str]:
    return [",".join(str(size) for size in shape) for shape in shapes]


def memory_text(size: int) -> str | int:
    """Bytes as the largest binary unit that holds them exactly ("8G"), else the number of bytes: it reads
    back to the same size."""
    for unit, factor in (("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return size


SCAN, DEMO, CONFIG, REPORT = "scan", "demo", "config", "report"
RUNS = (DEMO, SCAN)  # the commands that measure a model

# In the order --help shows them: each command's parameters are these entries that name it, in this order.
SETTINGS: tuple[Setting, ...] = (
    Setting("targets", (SCAN,), list[str] | None, None, argument=True, typer={"show_default": False, "metavar": "TARGET"},
            help="model.py, model.py:NAME, package.module:factory, or a saved model (TorchScript, torch.export); "
            "none: the targets of the config file."),
    Setting("history", (REPORT,), str, ..., argument=True, typer={"show_default": False},
            help="A history written by gradcheck_cli.Monitor (JSON lines)."),
    Setting("show", (CONFIG,), bool, False, "Print the effective configuration.", CONFIG_PANEL, ("--show",)),
    # demo's preset
    Setting("arch", (DEMO,), Arch, Arch.MLP, "Preset architecture.", PRESET_PANEL),
    Setting("depth", (DEMO,), int | None, None, "Hidden layers (mlp, cnn; default 50) or stacked recurrent layers "
            "(rnn, lstm; default 1).", PRESET_PANEL, bounds="depth"),
    Setting("width", (DEMO,), int | None, None, "Units, channels or hidden size (default 256 mlp, 128 cnn and "
            "rnn/lstm).", PRESET_PANEL, bounds="width"),
    Setting("activation", (DEMO,), Activation | None, None, "Hidden activation (default sigmoid; rnn: tanh or relu, "
            "default tanh; lstm: fixed).", PRESET_PANEL),
    Setting("init", (DEMO,), Init, Init.DEFAULT, "Weight initialization of the hidden layers.", PRESET_PANEL),
    Setting("gain", (DEMO,), float | None, None, "Gain for --init normal (std gain/sqrt(fan_in)), xavier or "
            "orthogonal.", PRESET_PANEL, bounds="gain"),
    Setting("norm", (DEMO,), Norm, Norm.NONE, "Normalization in each hidden block: after the weight layer, or first "
            "with --residual.", PRESET_PANEL),
    Setting("residual", (DEMO,), bool, False, "Use pre-activation residual blocks (rnn, lstm: residual connections "
            "between the stacked layers).", PRESET_PANEL, ("--residual",)),
    Setting("seq_len", (DEMO,), int, 50, "Time steps of the rnn/lstm presets.", PRESET_PANEL, bounds="seq_len_demo"),
    Setting("batch_size", (DEMO,), int | None, None, "Batch size (default 64 mlp, 16 cnn, 32 rnn/lstm).",
            PRESET_PANEL, bounds="batch_size"),
    # scan's model and inputs
    Setting("entry", (SCAN,), str | None, None, "The name of the model, factory or class to use.", MODEL_PANEL,
            key="entry", check=checks.text),
    Setting("path", (SCAN,), list[str] | None, None, "Add a folder to sys.path while importing (repeatable).",
            MODEL_PANEL, ("--path",), key="path", check=checks.folders, from_cli=_given_list),
    Setting("trust_pickle", (SCAN,), bool, False, "Allow loading a pickled module (runs code from the file).",
            MODEL_PANEL, ("--trust-pickle",), key="trust-pickle", check=checks.trust_pickle),
    Setting("input_shape", (SCAN,), list[str] | None, None, "Shape of one input, e.g. 8,3,32,32 (repeatable for "
            "several inputs).", MODEL_PANEL, ("--input-shape",), key="input-shape", check=checks.shapes,
            from_cli=_shapes, shown=_shapes_text),
    Setting("input_dtype", (SCAN,), str | None, None, "dtype of the inputs: float32, float64, float16, bfloat16, "
            "int64, int32, bool.", MODEL_PANEL, key="input-dtype", check=checks.one_of(tuple(DTYPE_BYTES))),
    Setting("vocab_size", (SCAN,), int | None, None, "Token models: draw token ids below this.", MODEL_PANEL,
            bounds="vocab_size", key="vocab-size"),
    Setting("seq_len", (SCAN,), int | None, None, "Sequence length for token and sequence inputs.", MODEL_PANEL,
            bounds="seq_len", key="seq-len"),
    Setting("batch_size", (SCAN,), int | None, None, "Batch size of inferred inputs (default 8).", MODEL_PANEL,
            bounds="batch_size", key="batch-size"),
    Setting("loss", (SCAN,), LossKind | None, None, "Loss to differentiate (default: the file's loss_fn, else ce or "
            "mse).", MODEL_PANEL, key="loss", check=checks.choice(LossKind)),
    # measurement
    Setting("seed", RUNS, int, 0, "Seed for the weights and the random batches.", MEASUREMENT_PANEL, bounds="seed",
            key="seed"),
    Setting("passes", RUNS, int, 3, "Forward/backward passes to aggregate (median).", MEASUREMENT_PANEL,
            bounds="passes", key="passes"),
    Setting("fix", (DEMO,), bool, True, "When there is an error finding, also measure the preset with each "
            "suggested fix that applies, in order, until one cures.", MEASUREMENT_PANEL, ("--fix/--no-fix",)),
    Setting("verify", RUNS, bool, False, "Apply each suggested fix to a copy of the model and measure it again.",
            MEASUREMENT_PANEL, ("--verify",), key="verify", check=checks.boolean),
    Setting("steps", RUNS, int, 0, "Also train a copy for N optimizer steps and measure it after each.",
            MEASUREMENT_PANEL, bounds="steps", key="steps"),
    Setting("optimizer", RUNS, Optimizer, Optimizer.SGD, "Optimizer for --steps.", MEASUREMENT_PANEL,
            key="optimizer", check=checks.choice(Optimizer)),
    Setting("lr", RUNS, float, 1e-3, "Learning rate you train with: for --steps and the learning-rate risk.",
            MEASUREMENT_PANEL, bounds="lr", key="lr"),
    Setting("ignore", RUNS, list[str] | None, None, "Measure but do not judge layers matching this glob, e.g. "
            "'encoder.*' (repeatable).", MEASUREMENT_PANEL, ("--ignore",), key="ignore", check=checks.patterns,
            from_cli=_given_list),
    # scan's baseline
    Setting("save_baseline", (SCAN,), str | None, None, "Record every layer's figures in this file.", BASELINE_PANEL,
            ("--save-baseline",)),
    Setting("baseline", (SCAN,), str | None, None, "Fail when gradient health regressed against this file.",
            BASELINE_PANEL, ("--baseline",)),
    Setting("baseline_tolerance", (SCAN,), float, 10.0, "Factor by which a layer's gradient ratio may move before "
            "--baseline fails.", BASELINE_PANEL, bounds="baseline_tolerance", key="baseline-tolerance"),
    # output and placement
    Setting("output_format", RUNS, OutputFormat, OutputFormat.TEXT, "Report format.", OUTPUT_PANEL, ("--format",),
            typer={"envvar": "GRADCHECK_FORMAT"}, key="format", check=checks.choice(OutputFormat), per_target=False),
    Setting("output", RUNS, str | None, None, "Write the report to this file (whole, or not at all).", OUTPUT_PANEL,
            ("--output", "-o")),
    Setting("plot", RUNS, str | None, None, "Also draw the gradient-flow figure to this .png, .svg or .html file "
            "(needs matplotlib: pip install 'gradcheck-cli\\[plot]'). Several scan targets: one file each, "
            "FILE-<target>.png.", OUTPUT_PANEL, ("--plot",)),
    Setting("device", RUNS, Device, Device.AUTO, "Where the passes run: cuda when torch can use it (auto), or cpu.",
            DEVICE_PANEL, key="device", check=checks.choice(Device)),
    Setting("amp", RUNS, Amp | None, None, "Run the passes under autocast in this dtype and report, per layer, the "
            "gradient elements fp16 cannot hold (fp16: with a loss scale, as torch.amp.GradScaler would).",
            DEVICE_PANEL, key="amp", check=checks.choice(Amp)),
    Setting("distributed", (SCAN,), bool, False, "Run in a torchrun job (on by itself under torchrun): each process "
            "measures its slice of the batch, the figures are summed over processes, the first prints the report.",
            DEVICE_PANEL, ("--distributed",)),
    Setting("fsdp", (SCAN,), bool, False, "With --distributed: shard the model with FSDP2, one top-level block at a "
            "time, then the root.", DEVICE_PANEL, ("--fsdp",)),
    # report's own
    Setting("step", (REPORT,), int | None, None, "Show the layers at this recorded step (default: the first with a "
            "problem, else the last).", OUTPUT_PANEL),
    Setting("output_format", (REPORT,), HistoryFormat, HistoryFormat.TEXT, "Report format.", OUTPUT_PANEL,
            ("--format",)),
    # how the report reads, and the exit code
    Setting("all_layers", (*RUNS, REPORT), bool, False, "Show every layer, not the condensed table.", OUTPUT_PANEL,
            ("--all-layers",)),
    Setting("quiet", RUNS, bool, False, "Text: print the verdict line, the findings (each with its first cause and "
            "fix) and one line on the fixes tried; no chart or tables.", OUTPUT_PANEL, ("--quiet", "-q")),
    Setting("silent", RUNS, bool, False, "Print nothing; the exit code says it all.", OUTPUT_PANEL,
            ("--silent", "-s")),
    Setting("color", (*RUNS, REPORT), Color, Color.AUTO, "Colour in the text report.", OUTPUT_PANEL, ("--color",)),
    Setting("fail_on", RUNS, FailOn, FailOn.ERROR, "Lowest severity that makes the exit code 1.", EXIT_PANEL,
            key="fail-on", check=checks.choice(FailOn), per_target=False),
    Setting("exit_zero", RUNS, bool, False, "Exit 0 even when there are findings (errors in use still exit 2).",
            EXIT_PANEL, ("--exit-zero",)),
    # configuration
    Setting("config", (*RUNS, CONFIG), str | None, None, "Config file to use (default: gradcheck.yaml, "
            ".gradcheck.yaml or pyproject.toml \\[tool.gradcheck], searched from here upward).", CONFIG_PANEL,
            ("--config",)),
    Setting("isolated", (*RUNS, CONFIG), bool, False, "Ignore every config file.", CONFIG_PANEL, ("--isolated",)),
    Setting("verbose", RUNS, bool, False, "Text: the whole report (layer table, each finding's evidence, every cause "
            "and fix); and say which config file is used.", CONFIG_PANEL, ("--verbose", "-v")),
    # limits
    Setting("timeout", RUNS, float, DEFAULT_TIMEOUT, "Seconds each target may take before it is stopped and reported "
            "(exit 2); 0: no limit.", DEVICE_PANEL, bounds="timeout", key="timeout"),
    Setting("max_memory", RUNS, str | None, None, "Memory the model's process may use, e.g. 8G or 50%; past it the "
            "target is stopped and reported (exit 2). Default: 75% of this machine's (or container's) memory.",
            DEVICE_PANEL, ("--max-memory",), typer={"show_default": False}, key="max-memory", check=checks.memory,
            from_cli=_memory, shown=memory_text),
    # the config file only
    Setting("thresholds", (), key="thresholds"),
    Setting("targets", (), key="targets", per_target=False),
)  # fmt: skip

# The config file's keys in the order ``config --show`` writes them (and docs/config.md lists them); a test
# holds it to the table's keys.
KEYS = (
    "passes", "seed", "loss", "fail-on", "format", "ignore", "input-shape", "input-dtype", "vocab-size", "seq-len",
    "batch-size", "entry", "path", "trust-pickle", "lr", "optimizer", "steps", "verify", "baseline-tolerance",
    "device", "amp", "timeout", "max-memory", "thresholds", "targets",
)  # fmt: skip
BY_KEY: dict[str, Setting] = {setting.key: setting for setting in SETTINGS if setting.key is not None}
TOP_LEVEL_ONLY_KEYS = tuple(key for key in KEYS if not BY_KEY[key].per_target)
TARGET_KEYS = tuple(key for key in KEYS if BY_KEY[key].per_target)


def for_command(command: str) -> tuple[Setting, ...]:
    """The parameters of ``command``, in the order --help shows them."""
    return tuple(setting for setting in SETTINGS if command in setting.commands)


def key_check(setting: Setting) -> Check | None:
    """The check of a setting's config key: its own, else its range's."""
    if setting.check is None and setting.bounds is not None:
        return checks.ranged(setting.bounds)
    return setting.check
