"""Lines for key paths in a TOML text: tomllib keeps none, so the ``[tool.gradcheck...]`` tables are searched
(best effort) for the line of a key, so that a pyproject.toml error names its line as a YAML one does."""

from __future__ import annotations

import re

_TOML_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_TOML_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_TOML_KEY}(?:\s*\.\s*{_TOML_KEY})*)\s*\]\]?\s*(?:#.*)?$")
_TOML_KEY_PART = re.compile(r"""[A-Za-z0-9_-]+|"((?:[^"\\]|\\.)*)"|'([^']*)'""")


class TomlLines:
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
