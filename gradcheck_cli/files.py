"""Writing a file the user will read (a report, a baseline): whole, or not at all."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_whole(path: Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes: a --plot PNG) to a temporary file beside ``path`` and rename it over ``path``:
    a reader sees the old file or the new one, never half of one, and a failure leaves no temporary file.
    Raises OSError."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never write through a file or link someone else put there; mode 0o666 lets the umask
        # decide the permissions, as for any file the user creates (mkstemp would make it 0600).
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        binary = isinstance(text, bytes)
        with os.fdopen(descriptor, "wb" if binary else "w", encoding=None if binary else "utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
