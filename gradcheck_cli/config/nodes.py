"""A parsed config file as nodes that know their line, and the one way a config error is raised.

YAML and TOML (config/parsing.py) both become a tree of ``Node`` and ``Entry``; the checks
(config/checks.py) and the reading of keys (config/reading.py) fail through ``Context.fail``, so every
message names the file and the line. No yaml and no torch here: the settings table imports the checks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, NoReturn

from gradcheck_cli.common.errors import GradcheckError


class ConfigError(GradcheckError):
    """A configuration file that cannot be used; the message names the file and the line."""


@dataclass
class Node:
    value: Any  # a scalar, a list of Node, or (mapping=True) a list of Entry
    line: int | None  # 1-based; None when not found (pyproject.toml)
    mapping: bool = False


@dataclass
class Entry:
    key: Any
    key_line: int | None
    node: Node


@dataclass(frozen=True)
class Source:
    shown: str  # the file as the user sees it, relative to the cwd when inside it
    table: str | None = None  # "[tool.gradcheck]" for pyproject.toml, said when no line is found

    def at(self, line: int | None) -> str:
        if line is not None:
            return f"{self.shown}:{line}"
        return f"{self.shown} {self.table}" if self.table else self.shown


@dataclass(frozen=True)
class Context:
    source: Source
    base_dir: Path  # the config file's folder: relative paths and targets are relative to it
    cwd: Path
    named: bool  # the user named the file (--config); False: found by searching upward
    notices: list[str] = dataclasses.field(default_factory=list)  # Config.notices, each given once

    def notice(self, message: str) -> None:
        if message not in self.notices:
            self.notices.append(message)

    def fail(self, line: int | None, message: str) -> NoReturn:
        raise ConfigError(f"{self.source.at(line)}: {message}")


# A check reads one key's node: the value it stands for, or Context.fail with one sentence.
Check = Callable[[Node, str, Context], Any]


def show(node: Node) -> str:
    """The value as an error sentence quotes it."""
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


def items(node: Node) -> list[Node]:
    """A list, or one scalar taken as a list of one (``ignore: "head.*"``)."""
    if node.mapping:
        return [node]  # reported by the item check
    return node.value if isinstance(node.value, list) else [node]


def shown_path(path: Path, cwd: Path | None = None) -> str:
    """``path`` relative to the cwd when it is inside it, else absolute."""
    cwd = Path.cwd() if cwd is None else cwd
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)
