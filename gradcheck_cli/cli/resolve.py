"""Command line > config file > default, for each setting of the table: what a command's options and the
config file together ask for, in the forms the library takes (ScanOptions, Thresholds, Limits, placement)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer

from gradcheck_cli.cli.invocation import stderr
from gradcheck_cli.common.choices import FailOn, OutputFormat
from gradcheck_cli.common.errors import InvalidOptionError
from gradcheck_cli.common.limits import RANGES, check_range
from gradcheck_cli.common.options import DTYPE_BYTES, InputOptions, ScanOptions
from gradcheck_cli.config.settings import Setting, for_command


@dataclass(frozen=True)
class OutputSettings:
    format: OutputFormat
    fail_on: FailOn


class Resolved:
    """A command's values and a config: a value counts as given when it did not come from its default."""

    def __init__(self, ctx: typer.Context, values: dict[str, Any], config: Any):
        self.ctx, self.values, self.config = ctx, values, config

    def given(self, name: str) -> bool:
        source = self.ctx.get_parameter_source(name)
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    def __getitem__(self, name: str) -> Any:
        """The effective value of the setting ``name``: the option's when given, else the config file's, else
        the option's default; in the config value's form, and held to its range."""
        setting = self._setting(name)
        cli_value = self.values[name]
        if setting.from_cli is not None:
            cli_value = setting.from_cli(cli_value)
        value = cli_value
        if setting.key is not None:
            value = self.config.setting(setting.key, cli_value, self.given(name), cli_value)
        if setting.bounds is not None and RANGES[setting.bounds].above_minimum and value is not None:
            check_range(setting.bounds, value)  # Typer's min and max could not hold it (cli/parameters.py)
        return value

    def _setting(self, name: str) -> Setting:
        command = self.ctx.command.name or ""
        return next(setting for setting in for_command(command) if setting.name == name)

    def thresholds(self) -> Any:
        """The thresholds the config file sets, with the effective learning rate."""
        from gradcheck_cli.judge.diagnosis import Thresholds

        lr = self.values["lr"]
        values = self.config.thresholds(lr if self.given("lr") else None)
        if "lr" not in values:
            values["lr"] = lr
        check_range("lr", values["lr"])
        return Thresholds(**values)

    def output(self) -> OutputSettings:
        return OutputSettings(self["output_format"], self["fail_on"])

    def placement(self) -> tuple[str, str | None]:
        """--device and --amp (or the config file's), as the worker takes them."""
        amp = self["amp"]
        return self["device"].value, amp.value if amp else None

    def limits(self) -> Any:
        """--timeout and --max-memory (or the config file's); the memory default is a share of this machine's."""
        from gradcheck_cli.cli.jobs import Limits
        from gradcheck_cli.common.limits import default_memory

        seconds, memory = self["timeout"], self["max_memory"]
        return Limits(timeout=seconds or None, max_memory=memory if memory is not None else default_memory())

    def scan_options(self) -> ScanOptions:
        """What ``scan`` asks of one target; its input shapes are read first (a bad one is that target's error)."""
        shapes, dtype = self["input_shape"], self["input_dtype"]
        if dtype is not None and dtype not in DTYPE_BYTES:
            raise InvalidOptionError(f"--input-dtype {dtype!r} is not one of {', '.join(DTYPE_BYTES)}.")
        return ScanOptions(
            entry=self["entry"], paths=tuple(self["path"]), trust_pickle=self["trust_pickle"], loss=self["loss"],
            passes=self["passes"], seed=self["seed"], verify=self["verify"], steps=self["steps"],
            optimizer=self["optimizer"], ignore=tuple(self["ignore"]),
            inputs=InputOptions(
                shapes=tuple(shapes), dtype=dtype, vocab_size=self["vocab_size"], seq_len=self["seq_len"],
                batch_size=self["batch_size"],
            ),
        )  # fmt: skip


def load_config(path: str | None, isolated: bool, verbose: bool) -> Any:
    """The config file's settings; with --verbose, say where they come from, and give its notices."""
    from gradcheck_cli.config.config import load_config as load

    loaded = load(path, isolated=isolated)
    if verbose:
        stderr.print(loaded.describe(), highlight=False, markup=False)
    for notice in loaded.notices:
        stderr.print(f"note: {notice}", highlight=False, markup=False)
    return loaded
