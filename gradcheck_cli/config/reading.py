"""A parsed config file's keys into checked values: unknown and duplicate keys refused (with a "did you mean"),
each key read by its check from the settings table (config/settings.py), the thresholds checked together as
``Thresholds`` checks them, and each of ``targets`` read as a target and its own settings."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gradcheck_cli.common.options import CHECKPOINT_SUFFIXES, split_target
from gradcheck_cli.config import checks
from gradcheck_cli.config.nodes import Context, Entry, Node, items, show, shown_path
from gradcheck_cli.config.settings import BY_KEY, KEYS, TARGET_KEYS, TOP_LEVEL_ONLY_KEYS, key_check
from gradcheck_cli.config.thresholds import DEPRECATED_THRESHOLD_KEYS, THRESHOLD_KEYS, merge_thresholds
from gradcheck_cli.judge.diagnosis import Thresholds

DOCS = "docs/config.md"
# A target ending so is a file, not a module.
_FILE_SUFFIXES = (".py", *CHECKPOINT_SUFFIXES)
_THRESHOLD_CHECKS = {
    key: (checks.integer(2) if key == "min-trend-layers" else checks.number(0)) for key in THRESHOLD_KEYS
}

Targets = tuple[tuple[str, dict[str, Any]], ...]  # each target, with the Settings fields it sets


def read_document(root: Node, context: Context) -> tuple[dict[str, Any], Targets]:
    """The Config fields the file sets at the top level, and its targets."""
    if not root.mapping:
        if context.source.table:
            expected = f"{context.source.table} must be a table of settings"
        else:
            expected = "the top level must be a mapping of settings (key: value)"
        context.fail(root.line, f"{expected}, not {show(root)}.")
    entries = _entries(root, context, KEYS, _unknown_top_level)
    values = _read_settings(entries, context)
    if "thresholds" in entries:
        _check_thresholds(values["threshold_values"], entries["thresholds"].key_line, context)
    for key in TOP_LEVEL_ONLY_KEYS:  # after the settings a target may also set, in KEYS order
        check = key_check(BY_KEY[key])
        if key in entries and check is not None:
            values[BY_KEY[key].attribute] = check(entries[key].node, entries[key].key, context)
    targets: Targets = ()
    if "targets" in entries:
        targets = _read_targets(entries["targets"], context, values.get("threshold_values", ()))
    return values, targets


def _entries(
    node: Node, context: Context, known: tuple[str, ...], unknown: Callable[[str, str], str]
) -> dict[str, Entry]:
    """The entries of a mapping by kebab-case key; unknown and duplicate keys (in either spelling) fail."""
    found: dict[str, Entry] = {}
    for entry in node.value:
        if not isinstance(entry.key, str):
            context.fail(entry.key_line, f"keys must be names, not {show(Node(entry.key, entry.key_line))}.")
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


def _read_settings(entries: dict[str, Entry], context: Context) -> dict[str, Any]:
    """The Settings fields (those a target may set too) that ``entries`` set, checked and converted, in the
    order of the file."""
    values: dict[str, Any] = {}
    for name, entry in entries.items():
        if name not in TARGET_KEYS:
            continue
        setting = BY_KEY[name]
        check = key_check(setting)
        if check is not None:
            values[setting.attribute] = check(entry.node, entry.key, context)
        elif name == "thresholds":
            values[setting.attribute] = _read_thresholds(entry, context)
    return values


def _read_thresholds(entry: Entry, context: Context) -> tuple[tuple[str, float], ...]:
    node = entry.node
    if not node.mapping:
        context.fail(node.line, f"'{entry.key}' must be a mapping of threshold: value, not {show(node)}.")
    found = _entries(node, context, THRESHOLD_KEYS, _unknown_threshold)
    for name in found.keys() & DEPRECATED_THRESHOLD_KEYS.keys():
        context.notice(DEPRECATED_THRESHOLD_KEYS[name])
    values = {
        name.replace("-", "_"): _THRESHOLD_CHECKS[name](item.node, item.key, context) for name, item in found.items()
    }
    return merge_thresholds((), tuple(values.items()))


def _check_thresholds(values: tuple[tuple[str, float], ...], line: int | None, context: Context) -> None:
    """The combination, as ``Thresholds`` itself checks it (warning lines below error lines)."""
    try:
        Thresholds(**dict(values))
    except ValueError as error:
        text = str(error)
        for key in THRESHOLD_KEYS:
            text = text.replace(key.replace("-", "_"), key)
        context.fail(line, f"these thresholds do not fit together: {text}.")


def _read_targets(entry: Entry, context: Context, inherited: tuple[tuple[str, float], ...]) -> Targets:
    if entry.node.mapping:
        context.fail(entry.node.line, f"'{entry.key}' must be a list of targets, not a mapping.")
    targets = []
    for item in items(entry.node):
        if isinstance(item.value, str):
            targets.append((_target(item, context), {}))
            continue
        if not item.mapping:
            context.fail(
                item.line,
                f"each of '{entry.key}' must be a target or a mapping with a 'target' key, not {show(item)}.",
            )
        found = _entries(item, context, ("target", *TARGET_KEYS), _unknown_in_target)
        if "target" not in found:
            context.fail(
                item.line, "this target has no 'target' key; add target: model.py (or package.module:factory)."
            )
        values = _read_settings(found, context)
        if "thresholds" in found:
            merged = merge_thresholds(inherited, values["threshold_values"])
            _check_thresholds(merged, found["thresholds"].key_line, context)
        targets.append((_target(found["target"].node, context), values))
    return tuple(targets)


def _target(node: Node, context: Context) -> str:
    """A file target resolved against the config file's folder and shown relative to the cwd when it is
    inside it; package.module:attr kept as written."""
    text = checks.text(node, "target", context)
    location, separator, attribute = split_target(text)
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
    return f"{shown_path(Path(os.path.normpath(candidate)), context.cwd)}{separator}{attribute}"
