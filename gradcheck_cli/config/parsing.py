"""Config file text into nodes with lines (config/nodes.py): YAML composed with the safe loader, TOML read by
tomllib with its lines searched for (config/toml_lines.py).

YAML is composed into nodes (``yaml.compose`` semantics with the safe loader) rather than loaded, so every
error names the file and the line of the offending key or value. A config file is untrusted input (issue 21):
no YAML anchors or aliases (an alias bomb expands exponentially), and only the safe loader's tags.
"""

from __future__ import annotations

import codecs
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from gradcheck_cli.common.errors import quoted
from gradcheck_cli.config.nodes import ConfigError, Entry, Node, Source
from gradcheck_cli.config.toml_lines import TomlLines

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# YAML 1.1 (PyYAML) reads 1e-3 as a string; YAML 1.2 and every user read it as a number.
_EXPONENT_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def decoded(raw: bytes, shown: str) -> str:
    """UTF-8 text (a byte-order mark dropped); otherwise an error that names the line of the first bad byte."""
    body = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        line = body.count(b"\n", 0, error.start) + 1
        raise ConfigError(
            f"{shown}:{line}: the file is not UTF-8 text (byte 0x{body[error.start]:02x}); save it as UTF-8."
        ) from None


def parse_yaml(text: str, source: Source) -> Node:
    loader_class = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    loader = loader_class(text)
    try:
        _refuse_anchors(text, loader_class, source)
        root = loader.get_single_node()
        if root is None:  # an empty file, or only comments
            return Node([], 1, mapping=True)
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


def _refuse_anchors(text: str, loader_class: type, source: Source) -> None:
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


def _yaml_node(node: yaml.Node, loader: Any) -> Node:
    """The node as Node; a tree, since _refuse_anchors let no alias through."""
    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_object(node, deep=True)
        if isinstance(value, str) and not node.style and _EXPONENT_FLOAT.fullmatch(value):
            value = float(value)
        return Node(value, line)
    if node.tag not in (_YAML_SEQUENCE, _YAML_MAPPING):  # !!set, !!omap, !!python/...: not safe_load's
        raise yaml.constructor.ConstructorError(None, None, f"the tag {node.tag} is not allowed", node.start_mark)
    if isinstance(node, yaml.SequenceNode):
        return Node([_yaml_node(item, loader) for item in node.value], line)
    entries = []
    for key_node, value_node in node.value:
        # A list or mapping as a key is reported as such ("keys must be names, not a list").
        key = loader.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else []
        entries.append(Entry(key, key_node.start_mark.line + 1, _yaml_node(value_node, loader)))
    return Node(entries, line, mapping=True)


def parse_toml(text: str, path: Path, shown: str) -> tuple[Source, Node]:
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
        source, table = Source(shown, "[tool.gradcheck]"), tool["gradcheck"]
    elif path.name == "pyproject.toml":
        raise ConfigError(f"{shown} has no [tool.gradcheck] table; add one, or use a gradcheck.yaml.")
    else:  # a stand-alone TOML file passed explicitly: the settings are its top level
        prefix, source, table = (), Source(shown), data
    lines = TomlLines(text, prefix)
    return source, _toml_node(table, (), lines)


def _toml_node(value: Any, keys: tuple[str | int, ...], lines: TomlLines) -> Node:
    line = lines.locate(keys)
    if isinstance(value, dict):
        entries = [
            Entry(key, lines.locate((*keys, key)), _toml_node(item, (*keys, key), lines)) for key, item in value.items()
        ]
        return Node(entries, line, mapping=True)
    if isinstance(value, list):
        return Node([_toml_node(item, (*keys, index), lines) for index, item in enumerate(value)], line)
    return Node(value, line)
