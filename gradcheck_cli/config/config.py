"""Configuration files: ``gradcheck.yaml``, ``.gradcheck.yaml`` or ``[tool.gradcheck]`` in ``pyproject.toml``,
loaded into a ``Config`` whose fields come from the settings table (config/settings.py).

Every setting is None when the file does not set it, so the CLI can apply command line > file > default.
Finding the file is config/discovery.py, its text into nodes with lines config/parsing.py, the keys into
checked values config/reading.py. A config file is read as untrusted input (issue 21): see those modules,
and ``trust-pickle: true`` is taken only from a file the user named with ``--config``. No torch here: the
CLI reads the configuration at start-up.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gradcheck_cli.config.discovery import find_config, read_config_text
from gradcheck_cli.config.nodes import ConfigError, Context, Source, shown_path
from gradcheck_cli.config.parsing import parse_toml, parse_yaml
from gradcheck_cli.config.reading import read_document
from gradcheck_cli.config.settings import BY_KEY, KEYS, TARGET_KEYS, TOP_LEVEL_ONLY_KEYS
from gradcheck_cli.config.thresholds import merge_thresholds


@dataclass(frozen=True, kw_only=True)
class _Precedence:
    """What the settings of a file do; the fields, one per key of the table, are added below."""

    threshold_values: tuple[tuple[str, float], ...] = ()  # Thresholds kwargs (snake_case) in THRESHOLD_KEYS order

    def setting(self, name: str, cli_value: Any, cli_was_given: bool, default: Any) -> Any:
        """Precedence: the command line's value if it was given, else the file's, else ``default``."""
        if cli_was_given:
            return cli_value
        found = BY_KEY.get(name.replace("_", "-"))
        if found is None or found.check is None and found.bounds is None or not hasattr(self, found.attribute):
            raise ValueError(f"{name!r} is not a setting (the thresholds come from .thresholds(lr))")
        value = getattr(self, found.attribute)
        return default if value is None else value

    def thresholds(self, lr: float | None = None) -> dict[str, float]:
        """The ``Thresholds`` kwargs the file sets, with ``lr`` (the effective learning rate, else the
        file's) added when there is one: ``Thresholds(**config.thresholds(lr))``."""
        values: dict[str, float] = dict(self.threshold_values)
        lr = lr if lr is not None else getattr(self, "lr", None)
        if lr is not None:
            values["lr"] = lr
        return values


def _with_keys(name: str, keys: tuple[str, ...], base: type) -> type:
    """``base`` with one field per key (None: not set), the thresholds aside (a field of _Precedence)."""
    fields = [(BY_KEY[key].attribute, Any, None) for key in keys if key not in ("thresholds", "targets")]
    made = dataclasses.make_dataclass(name, fields, bases=(base,), frozen=True, kw_only=True)
    made.__module__ = __name__
    return made


# What a file may set at the top level and per target; None (or () for thresholds) means not set.
Settings = _with_keys("Settings", TARGET_KEYS, _Precedence)


@dataclass(frozen=True, kw_only=True)
class TargetConfig(Settings):  # type: ignore[valid-type, misc]
    """One item of ``targets``: the target as ``gradcheck scan`` takes it, plus its own settings."""

    target: str  # a file path relative to the cwd when possible (else absolute), or package.module:attr


@dataclass(frozen=True, kw_only=True)
class _FileConfig(Settings):  # type: ignore[valid-type, misc]
    path: Path | None = None  # the file used; None: defaults only
    isolated: bool = False  # True: the file search was skipped on request
    targets: tuple[TargetConfig, ...] = ()
    notices: tuple[str, ...] = ()  # one sentence each, for the CLI to show (a deprecated key that is ignored)

    def for_target(self, target: TargetConfig) -> Config:
        """The settings for one target: its own over the file's top-level ones (thresholds key by key)."""
        changes: dict[str, Any] = {}
        for item in dataclasses.fields(Settings):
            value = getattr(target, item.name)
            if item.name == "threshold_values":
                changes[item.name] = merge_thresholds(self.threshold_values, value)
            elif value is not None:
                changes[item.name] = value
        return dataclasses.replace(self, targets=(), **changes)

    def describe(self) -> str:
        """One line for ``-v``: where the settings come from."""
        if self.isolated:
            return "config ignored (--isolated)"
        if self.path is None:
            return "no config file found (defaults)"
        table = " [tool.gradcheck]" if self.path.name == "pyproject.toml" else ""
        return f"using config {shown_path(self.path)}{table}"

    def to_yaml(self) -> str:
        """The settings this file makes, as YAML (kebab-case keys in KEYS order, only those set)."""
        data = _settings_data(self, KEYS)
        if self.targets:
            data["targets"] = [_target_data(target) for target in self.targets]
        ordered = {key: data[key] for key in KEYS if key in data}
        return yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False, allow_unicode=True)


# The settings of one config file (or none): ``load_config`` makes it, the CLI reads it. The keys that only
# the top level may set (fail-on, format) are its own fields.
Config = _with_keys("Config", TOP_LEVEL_ONLY_KEYS, _FileConfig)


def _settings_data(settings: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """The keys ``settings`` sets, as ``config --show`` writes their values."""
    data: dict[str, Any] = {}
    for key in keys:
        setting = BY_KEY[key]
        if key == "targets":
            continue
        value = getattr(settings, setting.attribute)
        if key == "thresholds":
            if value:
                data["thresholds"] = {name.replace("_", "-"): number for name, number in value}
        elif value is not None:
            data[key] = setting.show(value)
    return data


def _target_data(target: TargetConfig) -> str | dict[str, Any]:
    settings = _settings_data(target, TARGET_KEYS)
    if not settings:
        return target.target
    return {"target": target.target} | settings


def load_config(path: Path | str | None = None, *, isolated: bool = False, start: Path | None = None) -> Config:
    """``isolated``: defaults only. ``path``: that file (missing or unreadable is an error). Otherwise the
    file ``find_config`` finds from ``start`` (default: the working folder), or defaults when none; such a
    found file may not set ``trust-pickle: true`` (see docs/config.md)."""
    if isolated:
        return Config(isolated=True)
    named = path is not None
    if path is None:
        path = find_config(Path.cwd() if start is None else start)
        if path is None:
            return Config()
    return _load_file(Path(os.path.abspath(path)), named=named)


def _load_file(path: Path, named: bool) -> Config:
    """``named``: the user gave this file (--config), so it may grant trust-pickle."""
    shown = shown_path(path)
    text = read_config_text(path)
    try:
        if path.suffix == ".toml":
            source, root = parse_toml(text, path, shown)
        else:
            source = Source(shown)
            root = parse_yaml(text, source)
    except RecursionError:  # lists nested thousands deep: no config is written so
        raise ConfigError(f"config file {shown} nests lists or tables too deeply to be read; flatten it.") from None
    context = Context(source=source, base_dir=path.parent, cwd=Path.cwd(), named=named)
    values, targets = read_document(root, context)
    listed = tuple(TargetConfig(target=target, **settings) for target, settings in targets)
    return Config(path=path, notices=tuple(context.notices), targets=listed, **values)
