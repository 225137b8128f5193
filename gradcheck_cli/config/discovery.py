"""Where the config file is: discovery walks from the working folder up to the filesystem root and takes, in the
first folder that has one, the first of CONFIG_FILE_NAMES (a pyproject.toml without a ``[tool.gradcheck]``
table does not count). A file in a parent folder may have been written by someone else (a world-writable
/tmp among them), so only a regular file up to MAX_CONFIG_BYTES is read (issue 21).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from gradcheck_cli.common.files import FileTooLargeError, NotARegularFileError, read_regular_file
from gradcheck_cli.config.nodes import ConfigError, shown_path
from gradcheck_cli.config.parsing import decoded

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_FILE_NAMES = ("gradcheck.yaml", ".gradcheck.yaml", "pyproject.toml")
# A config file is a few dozen lines; anything much larger is not one (or is meant to exhaust memory).
MAX_CONFIG_BYTES = 2**20


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


def read_config_text(path: Path) -> str:
    """The file's text; a file that cannot be read is a ConfigError that says why and what to do."""
    shown = shown_path(path)
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
    return decoded(raw, shown)
