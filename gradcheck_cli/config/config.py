"""Configuration files: ``gradcheck.yaml``, ``.gradcheck.yaml`` or ``[tool.gradcheck]`` in ``pyproject.toml``.

Discovery walks from the working folder up to the filesystem root and takes, in the first folder that has
one, the first of those three files (a pyproject.toml without a ``[tool.gradcheck]`` table does not count).
Every setting is None when the file does not set it, so the CLI can apply command line > file > default.

YAML is composed into nodes (``yaml.compose`` semantics with the safe loader) rather than loaded, so every
error names the file and the line of the offending key or value; tomllib keeps no lines, so for
pyproject.toml the line is found by searching the text of the ``[tool.gradcheck...]`` tables (best effort).
No torch here: the CLI reads the configuration at start-up.

A config file may sit in any parent folder (a world-writable /tmp among them), so it is read as untrusted
input (issue 21): only regular files up to MAX_CONFIG_BYTES, no YAML anchors or aliases (an alias bomb
expands exponentially), every number within its range in ``limits.RANGES``, and ``trust-pickle: true``
only from a file the user named with ``--config``.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

import yaml

from gradcheck_cli.common.choices import Amp, Device, FailOn, LossKind, Optimizer, OutputFormat
from gradcheck_cli.common.errors import GradcheckError, InvalidOptionError, quoted
from gradcheck_cli.common.files import FileTooLargeError, NotARegularFileError, read_regular_file
from gradcheck_cli.common.limits import RANGES, parse_memory, range_problem
from gradcheck_cli.common.options import DTYPE_BYTES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_FILE_NAMES = ("gradcheck.yaml", ".gradcheck.yaml", "pyproject.toml")
DOCS = "docs/config.md"
DTYPE_NAMES = tuple(DTYPE_BYTES)  # what input-dtype may name
# The fields of diagnosis.Thresholds a file may set, kebab-case (lr is a top-level key of its own).
THRESHOLD_KEYS = (
    "decades-warning",
    "decades-error",
    "forward-decades-error",
    "relative-grad-warning",
    "relative-grad-error",
    "min-trend-layers",
    "lr-step-fraction",
)
# Threshold keys still read, so that old files keep working, but which no longer decide anything: key -> the
# one-sentence notice loading gives (issue 22: the relative gradient is judged against the lr only).
DEPRECATED_THRESHOLD_KEYS = {
    "relative-grad-warning": (
        "'relative-grad-warning' is deprecated and ignored: a relative gradient now warns where one SGD step at "
        "--lr (or lr) would change a layer by lr-step-fraction of its norm; remove the key."
    ),
}
# Every key, in the order ``Config.to_yaml`` writes them.
KEYS = (
    "passes",
    "seed",
    "loss",
    "fail-on",
    "format",
    "ignore",
    "input-shape",
    "input-dtype",
    "vocab-size",
    "seq-len",
    "batch-size",
    "entry",
    "path",
    "trust-pickle",
    "lr",
    "optimizer",
    "steps",
    "verify",
    "baseline-tolerance",
    "device",
    "amp",
    "timeout",
    "max-memory",
    "thresholds",
    "targets",
)
TOP_LEVEL_ONLY_KEYS = ("fail-on", "format", "targets")
TARGET_KEYS = tuple(key for key in KEYS if key not in TOP_LEVEL_ONLY_KEYS)
# The same suffixes as loading.CHECKPOINT_SUFFIXES, plus .py: a target ending so is a file, not a module.
_FILE_SUFFIXES = (".py", ".pt", ".pth", ".pt2", ".ts", ".jit", ".torchscript", ".ckpt", ".bin")
# A config file is a few dozen lines; anything much larger is not one (or is meant to exhaust memory).
MAX_CONFIG_BYTES = 2**20
# YAML 1.1 (PyYAML) reads 1e-3 as a string; YAML 1.2 and every user read it as a number.
_EXPONENT_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


# Fields that are not settings the command line can also give (``Config.setting`` refuses them).
_NOT_SETTINGS = frozenset({"threshold_values", "path", "isolated", "targets", "target"})


class ConfigError(GradcheckError):
    """A configuration file that cannot be used; the message names the file and the line."""


# --- The settings --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What a file may set at the top level and per target; None (or () for thresholds) means not set."""

    passes: int | None = None
    seed: int | None = None
    loss: LossKind | None = None
    ignore: tuple[str, ...] | None = None  # glob patterns on layer names
    input_shape: tuple[tuple[int, ...], ...] | None = None
    input_dtype: str | None = None  # one of DTYPE_NAMES
    vocab_size: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    entry: str | None = None
    # The key ``path``: absolute folders, resolved against the config file's folder (Config.path is the file).
    paths: tuple[str, ...] | None = None
    trust_pickle: bool | None = None
    lr: float | None = None
    optimizer: Optimizer | None = None
    steps: int | None = None
    verify: bool | None = None
    baseline_tolerance: float | None = None
    device: Device | None = None
    amp: Amp | None = None
    timeout: float | None = None  # seconds a target may run; 0: no limit
    max_memory: int | None = None  # bytes ("8G" and "75%" are read into bytes on this machine)
    # Thresholds kwargs (snake_case) set in the file, in THRESHOLD_KEYS order; a tuple keeps this hashable.
    threshold_values: tuple[tuple[str, float], ...] = ()

    def setting(self, name: str, cli_value: Any, cli_was_given: bool, default: Any) -> Any:
        """Precedence: the command line's value if it was given, else the file's, else ``default``."""
        if cli_was_given:
            return cli_value
        attribute = _field_name(name.replace("_", "-"))
        if attribute in _NOT_SETTINGS or attribute not in {item.name for item in dataclasses.fields(self)}:
            raise ValueError(f"{name!r} is not a setting (the thresholds come from .thresholds(lr))")
        value = getattr(self, attribute)
        return default if value is None else value

    def thresholds(self, lr: float | None = None) -> dict[str, float]:
        """The ``Thresholds`` kwargs the file sets, with ``lr`` (the effective learning rate, else the
        file's) added when there is one: ``Thresholds(**config.thresholds(lr))``."""
        values: dict[str, float] = dict(self.threshold_values)
        lr = lr if lr is not None else self.lr
        if lr is not None:
            values["lr"] = lr
        return values


@dataclass(frozen=True, kw_only=True)
class TargetConfig(Settings):
    """One item of ``targets``: the target as ``gradcheck scan`` takes it, plus its own settings."""

    target: str  # a file path relative to the cwd when possible (else absolute), or package.module:attr


@dataclass(frozen=True, kw_only=True)
class Config(Settings):
    """The settings of one config file (or none): ``load_config`` makes it, the CLI reads it."""

    path: Path | None = None  # the file used; None: defaults only
    isolated: bool = False  # True: the file search was skipped on request
    fail_on: FailOn | None = None
    format: OutputFormat | None = None
    targets: tuple[TargetConfig, ...] = ()
    notices: tuple[str, ...] = ()  # one sentence each, for the CLI to show (a deprecated key that is ignored)

    def for_target(self, target: TargetConfig) -> Config:
        """The settings for one target: its own over the file's top-level ones (thresholds key by key)."""
        changes: dict[str, Any] = {}
        for item in dataclasses.fields(Settings):
            value = getattr(target, item.name)
            if item.name == "threshold_values":
                changes[item.name] = _merge_thresholds(self.threshold_values, value)
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
        return f"using config {_shown(self.path)}{table}"

    def to_yaml(self) -> str:
        """The settings this file makes, as YAML (kebab-case keys in KEYS order, only those set)."""
        data = _settings_data(self)
        if self.fail_on is not None:
            data["fail-on"] = self.fail_on.value
        if self.format is not None:
            data["format"] = self.format.value
        if self.targets:
            data["targets"] = [_target_data(target) for target in self.targets]
        ordered = {key: data[key] for key in KEYS if key in data}
        return yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _field_name(key: str) -> str:
    """A kebab-case key to its field: 'seq-len' -> 'seq_len', 'path' -> 'paths'."""
    return "paths" if key == "path" else key.replace("-", "_")


def _key_name(field_name: str) -> str:
    return "path" if field_name == "paths" else field_name.replace("_", "-")


def _merge_thresholds(
    base: tuple[tuple[str, float], ...], override: tuple[tuple[str, float], ...]
) -> tuple[tuple[str, float], ...]:
    merged = dict(base) | dict(override)
    order = [key.replace("-", "_") for key in THRESHOLD_KEYS]
    return tuple((name, merged[name]) for name in order if name in merged)


def _settings_data(settings: Settings) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for item in dataclasses.fields(Settings):
        value = getattr(settings, item.name)
        if item.name == "threshold_values":
            if value:
                data["thresholds"] = {name.replace("_", "-"): number for name, number in value}
            continue
        if value is None:
            continue
        if isinstance(value, Enum):
            value = value.value
        elif item.name == "input_shape":
            value = [",".join(str(size) for size in shape) for shape in value]
        elif item.name == "max_memory":
            value = _memory_text(value)
        elif isinstance(value, tuple):
            value = list(value)
        data[_key_name(item.name)] = value
    return data


def _memory_text(size: int) -> str | int:
    """Bytes as the largest binary unit that holds them exactly ("8G"), else the number of bytes: it reads
    back to the same size."""
    for unit, factor in (("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return size


def _target_data(target: TargetConfig) -> str | dict[str, Any]:
    settings = _settings_data(target)
    if not settings:
        return target.target
    return {"target": target.target} | {key: settings[key] for key in KEYS if key in settings}


# --- Discovery and loading -----------------------------------------------------------------------------


def find_config(start: Path) -> Path | None:
    """The nearest config file from ``start`` upward: in each folder the first of CONFIG_FILE_NAMES that
    exists (a pyproject.toml only when it has a [tool.gradcheck] table)."""
    folder = Path(os.path.abspath(start))
    if folder.is_file():
        folder = folder.parent
    for candidate_folder in (folder, *folder.parents):
        for name in CONFIG_FILE_NAMES:
            candidate = candidate_folder / name
            if candidate.is_file() and (name != "pyproject.toml" or _has_gradcheck_table(candidate)):
                return candidate
    return None


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


def _has_gradcheck_table(path: Path) -> bool:
    try:
        text = read_regular_file(path, MAX_CONFIG_BYTES).decode("utf-8-sig")
    except FileTooLargeError:
        return True  # loading reports the size: skipping it could silently drop settings such as fail-on
    except (OSError, UnicodeDecodeError):
        return False
    try:
        tool = tomllib.loads(text).get("tool")
    except tomllib.TOMLDecodeError:
        # Unparseable: it counts when it visibly has the table, so that loading reports the syntax error.
        return re.search(r"^\s*\[+\s*tool\s*\.\s*gradcheck\b", text, re.MULTILINE) is not None
    return isinstance(tool, dict) and "gradcheck" in tool


def _load_file(path: Path, named: bool) -> Config:
    """``named``: the user gave this file (--config), so it may grant trust-pickle."""
    shown = _shown(path)
    try:
        raw = read_regular_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"config file {shown} not found; check the path.") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {shown} is a folder; pass a gradcheck.yaml or pyproject.toml.") from None
    except NotARegularFileError:
        raise ConfigError(
            f"config file {shown} is not a regular file (a device, FIFO or socket); pass a gradcheck.yaml or "
            "pyproject.toml."
        ) from None
    except FileTooLargeError:
        raise ConfigError(
            f"config file {shown} is larger than {MAX_CONFIG_BYTES // 2**20} MiB, too large to be a config file; "
            "check that it is the right file."
        ) from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(f"config file {shown} cannot be read ({reason}); check its permissions.") from None
    text = _decoded(raw, shown)
    try:
        if path.suffix == ".toml":
            source, root = _parse_toml(text, path, shown)
        else:
            source = _Source(shown)
            root = _parse_yaml(text, source)
    except RecursionError:  # lists nested thousands deep: no config is written so
        raise ConfigError(f"config file {shown} nests lists or tables too deeply to be read; flatten it.") from None
    context = _Context(source=source, base_dir=path.parent, cwd=Path.cwd(), named=named)
    return _build_config(root, context, path)


def _decoded(raw: bytes, shown: str) -> str:
    """UTF-8 text (a byte-order mark dropped); otherwise an error that names the line of the first bad byte."""
    body = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        line = body.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            f"{shown}:{line}: the file is not UTF-8 text (byte 0x{body[error.start]:02x}); save it as UTF-8."
        ) from None


# --- Parsed documents, with lines ----------------------------------------------------------------------


@dataclass
class _Node:
    value: Any  # a scalar, a list of _Node, or (mapping=True) a list of _Entry
    line: int | None  # 1-based; None when not found (pyproject.toml)
    mapping: bool = False


@dataclass
class _Entry:
    key: Any
    key_line: int | None
    node: _Node


@dataclass(frozen=True)
class _Source:
    shown: str  # the file as the user sees it, relative to the cwd when inside it
    table: str | None = None  # "[tool.gradcheck]" for pyproject.toml, said when no line is found

    def at(self, line: int | None) -> str:
        if line is not None:
            return f"{self.shown}:{line}"
        return f"{self.shown} {self.table}" if self.table else self.shown


def _parse_yaml(text: str, source: _Source) -> _Node:
    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_class(text)
    try:
        _refuse_anchors(text, loader_class, source)
        root = loader.get_single_node()
        if root is None:  # an empty file, or only comments
            return _Node([], 1, mapping=True)
        return _yaml_node(root, loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "cannot be parsed"
        if error.problem and error.context and not error.context.startswith("while"):
            problem = f"{error.context} {error.problem}"  # "expected a single document ... but found another"
        problem = problem.rstrip(".")
        raise ConfigError(f"{source.at(mark.line + 1 if mark else None)}: invalid YAML: {problem}.") from None
    except yaml.YAMLError as error:  # e.g. a character YAML does not allow; the message has its position
        raise ConfigError(f"{source.at(None)}: invalid YAML: {quoted(error)}.") from None
    finally:
        loader.dispose()


def _refuse_anchors(text: str, loader_class: type, source: _Source) -> None:
    """Anchors and aliases are refused from the event stream, before anything is composed: walking the
    nodes of an alias bomb ("billion laughs", nine aliases of nine aliases ...) visits 9**9 nodes, and a
    config file has no need to repeat itself. Syntax errors surface here as during composing."""
    for event in yaml.parse(text, Loader=loader_class):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ConfigError(
                f"{source.at(event.start_mark.line + 1)}: YAML anchors and aliases (&name, *name) are not "
                "allowed in a config file; write the value out where it is used."
            )


_YAML_SEQUENCE, _YAML_MAPPING = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"


def _yaml_node(node: yaml.Node, loader: Any) -> _Node:
    """The node as _Node; a tree, since _refuse_anchors let no alias through."""
    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_object(node, deep=True)
        if isinstance(value, str) and not node.style and _EXPONENT_FLOAT.fullmatch(value):
            value = float(value)
        return _Node(value, line)
    if node.tag not in (_YAML_SEQUENCE, _YAML_MAPPING):  # !!set, !!omap, !!python/...: not safe_load's
        raise yaml.constructor.ConstructorError(None, None, f"the tag {node.tag} is not allowed", node.start_mark)
    if isinstance(node, yaml.SequenceNode):
        return _Node([_yaml_node(item, loader) for item in node.value], line)
    entries = []
    for key_node, value_node in node.value:
        # A list or mapping as a key is reported as such ("keys must be names, not a list").
        key = loader.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else []
        entries.append(_Entry(key, key_node.start_mark.line + 1, _yaml_node(value_node, loader)))
    return _Node(entries, line, mapping=True)


def _parse_toml(text: str, path: Path, shown: str) -> tuple[_Source, _Node]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        found = re.search(r"\((?:at line (\d+), column \d+|at end of document)\)", message)
        problem = (message[: found.start()] if found else message).strip().rstrip(".")
        line = (found.group(1) or len(text.splitlines())) if found else None
        raise ConfigError(f"{shown}{f':{line}' if line else ''}: invalid TOML: {problem}.") from None
    tool = data.get("tool")
    if isinstance(tool, dict) and "gradcheck" in tool:
        prefix: tuple[str, ...] = ("tool", "gradcheck")
        source, table = _Source(shown, "[tool.gradcheck]"), tool["gradcheck"]
    elif path.name == "pyproject.toml":
        raise ConfigError(f"{shown} has no [tool.gradcheck] table; add one, or use a gradcheck.yaml.")
    else:  # a stand-alone TOML file passed explicitly: the settings are its top level
        prefix, source, table = (), _Source(shown), data
    lines = _TomlLines(text, prefix)
    return source, _toml_node(table, (), lines)


def _toml_node(value: Any, keys: tuple[str | int, ...], lines: _TomlLines) -> _Node:
    line = lines.locate(keys)
    if isinstance(value, dict):
        entries = [
            _Entry(key, lines.locate((*keys, key)), _toml_node(item, (*keys, key), lines))
            for key, item in value.items()
        ]
        return _Node(entries, line, mapping=True)
    if isinstance(value, list):
        return _Node([_toml_node(item, (*keys, index), lines) for index, item in enumerate(value)], line)
    return _Node(value, line)


_TOML_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_TOML_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_TOML_KEY}(?:\s*\.\s*{_TOML_KEY})*)\s*\]\]?\s*(?:#.*)?$")
_TOML_KEY_PART = re.compile(r"""[A-Za-z0-9_-]+|"((?:[^"\\]|\\.)*)"|'([^']*)'""")


class _TomlLines:
    """Best-effort lines for key paths in a TOML text: tomllib keeps none. A key path is the keys and list
    indices below ``prefix`` (e.g. ("targets", 1, "passes")); arrays of tables are counted by occurrence."""

    def __init__(self, text: str, prefix: tuple[str, ...]):
        self.lines = text.splitlines()
        self.prefix = prefix
        headers: list[tuple[tuple[str | int, ...], int]] = [((), -1)]  # the root table has no header line
        counts: dict[tuple[str, ...], int] = {}
        for number, line in enumerate(self.lines):
            match = _TOML_HEADER.match(line)
            if not match:
                continue
            parts = tuple(_toml_key_text(part) for part in _TOML_KEY_PART.finditer(match.group(2)))
            if match.group(1) == "[[":
                counts[parts] = counts.get(parts, -1) + 1
                for nested in [key for key in counts if len(key) > len(parts) and key[: len(parts)] == parts]:
                    del counts[nested]  # a new element starts its own nested arrays
            indexed: list[str | int] = []
            for size in range(1, len(parts) + 1):
                indexed.append(parts[size - 1])
                if parts[:size] in counts:
                    indexed.append(counts[parts[:size]])
            headers.append((tuple(indexed), number))
        ends = [number for _, number in headers[1:]] + [len(self.lines)]
        self.sections = [(path, start, end) for (path, start), end in zip(headers, ends)]

    def locate(self, keys: tuple[str | int, ...]) -> int | None:
        """The 1-based line of ``keys``, or None."""
        full = (*self.prefix, *keys)
        for cut in range(len(full), -1, -1):
            table, rest = full[:cut], full[cut:]
            for path, start, end in self.sections:
                if path != table:
                    continue
                if not rest:
                    return start + 1 if start >= 0 else None
                line = self._find(rest, start + 1, end)
                if line is not None:
                    return line
        # Fallback: the last key anywhere in the gradcheck tables.
        names = [key for key in keys if isinstance(key, str)]
        if names:
            for path, start, end in self.sections:
                if path[: len(self.prefix)] == self.prefix:
                    line = self._search(names[-1], start + 1, end, anywhere=True)
                    if line is not None:
                        return line + 1
        return None

    def _find(self, rest: tuple[str | int, ...], start: int, end: int) -> int | None:
        names: list[str] = []
        for key in rest:
            if not isinstance(key, str):
                break
            names.append(key)
        for size in range(len(names), 0, -1):  # a dotted key (a.b = ...) first, then its first part
            dotted = r"\s*\.\s*".join(_key_pattern(name) for name in names[:size])
            pattern = re.compile(rf"^\s*{dotted}\s*=")
            position = next((n for n in range(start, end) if pattern.match(self.lines[n])), None)
            if position is None:
                continue
            # Inside an inline table or array: the next keys on this line or the lines after it.
            for key in rest[size:]:
                if isinstance(key, str):
                    found = self._search(key, position, end, anywhere=True)
                    position = found if found is not None else position
            return position + 1
        return None

    def _search(self, key: str, start: int, end: int, anywhere: bool) -> int | None:
        lead = r"(?:^|[{,\s])" if anywhere else r"^\s*"
        pattern = re.compile(rf"{lead}{_key_pattern(key)}\s*=")
        return next((n for n in range(start, end) if pattern.search(self.lines[n])), None)


def _toml_key_text(match: re.Match) -> str:
    if match.group(1) is not None:
        return match.group(1)
    if match.group(2) is not None:
        return match.group(2)
    return match.group(0)


def _key_pattern(key: str) -> str:
    escaped = re.escape(key)
    return rf"""(?:{escaped}|"{escaped}"|'{escaped}')"""


# --- Validation ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    source: _Source
    base_dir: Path  # the config file's folder: relative paths and targets are relative to it
    cwd: Path
    named: bool  # the user named the file (--config); False: found by searching upward
    notices: list[str] = dataclasses.field(default_factory=list)  # Config.notices, each given once

    def notice(self, message: str) -> None:
        if message not in self.notices:
            self.notices.append(message)

    def fail(self, line: int | None, message: str) -> NoReturn:
        raise ConfigError(f"{self.source.at(line)}: {message}")


_Check = Callable[[_Node, str, _Context], Any]


def _show(node: _Node) -> str:
    if node.mapping:
        return "a mapping"
    value = node.value
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "an empty value"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, date):
        return f"the date {value}"
    return repr(value) if isinstance(value, str) else repr(str(value))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(minimum: int) -> _Check:
    def check(node: _Node, key: str, context: _Context) -> int:
        if not _is_int(node.value) or node.value < minimum:
            context.fail(node.line, f"'{key}' must be an integer of at least {minimum}, not {_show(node)}.")
        return node.value

    return check


def _ranged(name: str) -> _Check:
    """A number in ``limits.RANGES[name]``: the same range as the command line's option and the API's
    argument (a seed past 2**63 would otherwise reach torch and fail there)."""

    def check(node: _Node, key: str, context: _Context) -> int | float:
        problem = range_problem(name, node.value)
        if problem is not None:
            context.fail(node.line, f"'{key}' {problem}, not {_show(node)}.")
        return node.value if RANGES[name].integer else float(node.value)

    return check


def _number(above: float) -> _Check:
    def check(node: _Node, key: str, context: _Context) -> float:
        value = node.value
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and value > above)
        ):
            context.fail(node.line, f"'{key}' must be a number greater than {above:g}, not {_show(node)}.")
        return float(value)

    return check


def _boolean(node: _Node, key: str, context: _Context) -> bool:
    if not isinstance(node.value, bool):
        context.fail(node.line, f"'{key}' must be true or false, not {_show(node)}.")
    return node.value


def _trust_pickle(node: _Node, key: str, context: _Context) -> bool:
    """Unpickling runs code, so the consent to it cannot come from a file the user did not name: the search
    goes up to the filesystem root, and a folder above (a shared or world-writable /tmp) may hold a config
    file that someone else wrote. Refused rather than ignored, so that the user sees why it did not apply."""
    value = _boolean(node, key, context)
    if value and not context.named:
        context.fail(
            node.line,
            f"'{key}' is honoured only from --trust-pickle or a file given with --config, not from a config "
            "file found by searching the parent folders; pass --trust-pickle, or name this file with --config.",
        )
    return value


def _memory(node: _Node, key: str, context: _Context) -> int:
    """A size such as "8G", "512M" or "75%" (of this machine's memory), or a number of bytes -> bytes."""
    value = node.value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        context.fail(node.line, f"'{key}' must be a size such as 8G, 512M or 75%, not {_show(node)}.")
    try:
        return parse_memory(str(value), shown_as=f"'{key}'")
    except InvalidOptionError as error:
        context.fail(node.line, str(error))


def _text(node: _Node, key: str, context: _Context) -> str:
    if not isinstance(node.value, str) or not node.value.strip():
        context.fail(node.line, f"'{key}' must be a non-empty string, not {_show(node)}.")
    return node.value


def _one_of(names: tuple[str, ...], convert: Callable[[str], Any] = str) -> _Check:
    def check(node: _Node, key: str, context: _Context) -> Any:
        if isinstance(node.value, str) and node.value in names:
            return convert(node.value)
        close = difflib.get_close_matches(node.value, names, n=1) if isinstance(node.value, str) else []
        hint = f"; did you mean '{close[0]}'?" if close else "."
        context.fail(node.line, f"'{key}' must be one of {', '.join(names)}, not {_show(node)}{hint}")

    return check


def _choice(enum: type[Enum]) -> _Check:
    return _one_of(tuple(member.value for member in enum), enum)


def _items(node: _Node) -> list[_Node]:
    """A list, or one scalar taken as a list of one (``ignore: "head.*"``)."""
    if node.mapping:
        return [node]  # reported by the item check
    return node.value if isinstance(node.value, list) else [node]


def _patterns(node: _Node, key: str, context: _Context) -> tuple[str, ...]:
    patterns = []
    for item in _items(node):
        if node.mapping or not isinstance(item.value, str) or not item.value.strip():
            context.fail(item.line, f"'{key}' must be a list of glob patterns on layer names, not {_show(item)}.")
        patterns.append(item.value)
    return tuple(patterns)


def _folders(node: _Node, key: str, context: _Context) -> tuple[str, ...]:
    folders = []
    for item in _items(node):
        if node.mapping or not isinstance(item.value, str) or not item.value.strip():
            context.fail(item.line, f"'{key}' must be a list of folders, not {_show(item)}.")
        folders.append(os.path.normpath(context.base_dir / os.path.expanduser(item.value)))
    return tuple(folders)


def _shapes(node: _Node, key: str, context: _Context) -> tuple[tuple[int, ...], ...]:
    items = _items(node)
    if isinstance(node.value, list) and items and all(_is_int(item.value) for item in items):
        items = [node]  # [8, 3, 32, 32] is one shape
    return tuple(_shape(item, key, context) for item in items)


def _shape(node: _Node, key: str, context: _Context) -> tuple[int, ...]:
    """The grammar of inputs.parse_shape: '8,3,32,32', '8x3x32x32', or a list [8, 3, 32, 32]."""
    value = node.value
    shape: tuple[int, ...] = ()
    if isinstance(value, str):
        parts = [part for part in value.replace("x", ",").replace(" ", "").split(",") if part]
        if all(part.isascii() and part.isdigit() for part in parts):
            shape = tuple(int(part) for part in parts)
    elif isinstance(value, list) and not node.mapping and all(_is_int(item.value) for item in value):
        shape = tuple(item.value for item in value)
    if not shape or any(size < 1 for size in shape):
        context.fail(
            node.line, f"'{key}' must be a list of shapes such as \"8,3,32,32\" or [8, 3, 32, 32], not {_show(node)}."
        )
    too_large = [size for size in shape if range_problem("input_dim", size)]
    if too_large:
        context.fail(
            node.line,
            f"'{key}' has a size of {too_large[0]}; each size {range_problem('input_dim', too_large[0])}, and the "
            "whole input must fit max-memory.",
        )
    return shape


_THRESHOLD_CHECKS: dict[str, _Check] = {
    key: (_integer(2) if key == "min-trend-layers" else _number(0)) for key in THRESHOLD_KEYS
}

_SETTING_CHECKS: dict[str, _Check] = {
    "passes": _ranged("passes"),
    "seed": _ranged("seed"),
    "loss": _choice(LossKind),
    "ignore": _patterns,
    "input-shape": _shapes,
    "input-dtype": _one_of(DTYPE_NAMES),
    "vocab-size": _ranged("vocab_size"),
    "seq-len": _ranged("seq_len"),
    "batch-size": _ranged("batch_size"),
    "entry": _text,
    "path": _folders,
    "trust-pickle": _trust_pickle,
    "lr": _ranged("lr"),
    "optimizer": _choice(Optimizer),
    "steps": _ranged("steps"),
    "verify": _boolean,
    "baseline-tolerance": _ranged("baseline_tolerance"),
    "device": _choice(Device),
    "amp": _choice(Amp),
    "timeout": _ranged("timeout"),
    "max-memory": _memory,
}


def _entries(
    node: _Node, context: _Context, known: tuple[str, ...], unknown: Callable[[str, str], str]
) -> dict[str, _Entry]:
    """The entries of a mapping by kebab-case key; unknown and duplicate keys (in either spelling) fail."""
    found: dict[str, _Entry] = {}
    for entry in node.value:
        if not isinstance(entry.key, str):
            context.fail(entry.key_line, f"keys must be names, not {_show(_Node(entry.key, entry.key_line))}.")
        name = entry.key.replace("_", "-")
        if name in found:
            first = found[name].key_line
            also = f" (also set on line {first})" if first is not None else ""
            context.fail(entry.key_line, f"duplicate key '{entry.key}'{also}; keep one.")
        if name not in known:
            context.fail(entry.key_line, unknown(entry.key, name))
        found[name] = entry
    return found


def _did_you_mean(name: str, candidates: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f"; did you mean '{close[0]}'? See {DOCS}" if close else f"; see {DOCS}"


def _unknown_top_level(key: str, name: str) -> str:
    return f"unknown key '{key}'{_did_you_mean(name, KEYS)} for the keys."


def _unknown_in_target(key: str, name: str) -> str:
    if name in TOP_LEVEL_ONLY_KEYS:
        return f"'{key}' cannot be set per target; set it at the top level."
    return f"unknown key '{key}' in a target{_did_you_mean(name, ('target', *TARGET_KEYS))} for the keys."


def _unknown_threshold(key: str, name: str) -> str:
    if name == "lr":
        return "'lr' is not a threshold; set it as a top-level key (lr: 0.001)."
    return f"unknown threshold '{key}'{_did_you_mean(name, THRESHOLD_KEYS)} for the thresholds."


def _read_settings(entries: dict[str, _Entry], context: _Context) -> dict[str, Any]:
    """The Settings fields that ``entries`` set, checked and converted."""
    values: dict[str, Any] = {}
    for name, entry in entries.items():
        if name in _SETTING_CHECKS:
            values[_field_name(name)] = _SETTING_CHECKS[name](entry.node, entry.key, context)
        elif name == "thresholds":
            values["threshold_values"] = _read_thresholds(entry, context)
    return values


def _read_thresholds(entry: _Entry, context: _Context) -> tuple[tuple[str, float], ...]:
    node = entry.node
    if not node.mapping:
        context.fail(node.line, f"'{entry.key}' must be a mapping of threshold: value, not {_show(node)}.")
    found = _entries(node, context, THRESHOLD_KEYS, _unknown_threshold)
    for name in found.keys() & DEPRECATED_THRESHOLD_KEYS.keys():
        context.notice(DEPRECATED_THRESHOLD_KEYS[name])
    values = {
        name.replace("-", "_"): _THRESHOLD_CHECKS[name](item.node, item.key, context) for name, item in found.items()
    }
    return _merge_thresholds((), tuple(values.items()))


def _check_thresholds(values: tuple[tuple[str, float], ...], line: int | None, context: _Context) -> None:
    """The combination, as ``Thresholds`` itself checks it (warning lines below error lines)."""
    from gradcheck_cli.judge.diagnosis import Thresholds  # torch-free, but only needed when a file sets some

    try:
        Thresholds(**dict(values))
    except ValueError as error:
        text = str(error)
        for key in THRESHOLD_KEYS:
            text = text.replace(key.replace("-", "_"), key)
        context.fail(line, f"these thresholds do not fit together: {text}.")


def _build_config(root: _Node, context: _Context, path: Path) -> Config:
    if not root.mapping:
        if context.source.table:
            expected = f"{context.source.table} must be a table of settings"
        else:
            expected = "the top level must be a mapping of settings (key: value)"
        context.fail(root.line, f"{expected}, not {_show(root)}.")
    entries = _entries(root, context, KEYS, _unknown_top_level)
    values = _read_settings(entries, context)
    if "thresholds" in entries:
        _check_thresholds(values["threshold_values"], entries["thresholds"].key_line, context)
    for name, enum in (("fail-on", FailOn), ("format", OutputFormat)):
        if name in entries:
            values[name.replace("-", "_")] = _choice(enum)(entries[name].node, entries[name].key, context)
    if "targets" in entries:
        inherited = values.get("threshold_values", ())
        values["targets"] = _read_targets(entries["targets"], context, inherited)
    return Config(path=path, notices=tuple(context.notices), **values)


def _read_targets(
    entry: _Entry, context: _Context, inherited: tuple[tuple[str, float], ...]
) -> tuple[TargetConfig, ...]:
    if entry.node.mapping:
        context.fail(entry.node.line, f"'{entry.key}' must be a list of targets, not a mapping.")
    targets = []
    for item in _items(entry.node):
        if isinstance(item.value, str):
            targets.append(TargetConfig(target=_target(item, context)))
            continue
        if not item.mapping:
            context.fail(
                item.line,
                f"each of '{entry.key}' must be a target or a mapping with a 'target' key, not {_show(item)}.",
            )
        found = _entries(item, context, ("target", *TARGET_KEYS), _unknown_in_target)
        if "target" not in found:
            context.fail(
                item.line, "this target has no 'target' key; add target: model.py (or package.module:factory)."
            )
        values = _read_settings(found, context)
        if "thresholds" in found:
            merged = _merge_thresholds(inherited, values["threshold_values"])
            _check_thresholds(merged, found["thresholds"].key_line, context)
        targets.append(TargetConfig(target=_target(found["target"].node, context), **values))
    return tuple(targets)


def _target(node: _Node, context: _Context) -> str:
    """A file target resolved against the config file's folder and shown relative to the cwd when it is
    inside it; package.module:attr kept as written."""
    text = _text(node, "target", context)
    location, separator, attribute = _split_target(text)
    expanded = os.path.expanduser(location)
    candidate = context.base_dir / expanded
    is_file = (
        os.path.isabs(expanded)
        or "/" in expanded
        or "\\" in expanded
        or Path(expanded).suffix.lower() in _FILE_SUFFIXES
        or candidate.exists()
    )
    if not is_file:
        return text
    return f"{_shown(Path(os.path.normpath(candidate)), context.cwd)}{separator}{attribute}"


def _split_target(target: str) -> tuple[str, str, str]:
    """As loading._split_target: 'model.py:build' -> ('model.py', ':', 'build'); drive letters stay."""
    head, separator, tail = target.rpartition(":")
    if not separator or not tail or "/" in tail or "\\" in tail or len(head) <= 1:
        return target, "", ""
    return head, separator, tail


def _shown(path: Path, cwd: Path | None = None) -> str:
    """``path`` relative to the cwd when it is inside it, else absolute."""
    cwd = Path.cwd() if cwd is None else cwd
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)
