"""The user's files: a report, a baseline or a figure written whole, or not at all; a file read only when it is a
regular one (a device never ends, a FIFO blocks until someone writes).

What "the file" is depends on what the path names (issue 21): a regular file is replaced whole (a temporary
file beside it, renamed over it); a symbolic link is followed and its final target replaced whole, so the
link stays a link; a terminal, a FIFO or another character device (``/dev/null``) is written in place, never
replaced by a regular file; ``/dev/stdout``, ``/dev/stderr``, ``/dev/fd/N`` and ``/proc/self/fd/N`` are
written through this process's own descriptor, at its offset (a shell's ``>>`` appends). Directories,
block devices and sockets are refused with an OSError that says so.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import sys
from pathlib import Path

# A path naming one of this process's descriptors. /dev/stdout and /dev/stderr are links to one of these.
_OWN_DESCRIPTOR = re.compile(r"/(?:dev/fd|proc/(?:self|thread-self|(?P<pid>\d+))/fd)/(?P<fd>\d+)")
_MAX_LINKS = 40  # as the kernel's own limit on links followed in one path (ELOOP)


def write_whole(path: Path | str, text: str | bytes) -> None:
    """Write ``text`` (or bytes: a --plot PNG) to what ``path`` names (see the module's docstring). A regular
    file goes to a temporary file beside it first and is renamed over it: a reader sees the old file or the
    new one, never half of one, and a failure leaves no temporary file. Raises OSError."""
    name = os.fspath(path)
    if not name:
        raise OSError(errno.ENOENT, "the file name is empty", name)
    data = text.encode("utf-8") if isinstance(text, str) else text
    descriptor = _own_descriptor(name)
    if descriptor is not None:
        _write_descriptor(descriptor, data)
        return
    try:
        mode = os.stat(name).st_mode  # what the path names once every link is followed
    except FileNotFoundError:  # a new file, or a dangling link: its target is created
        mode = None
    if mode is None or stat.S_ISREG(mode):
        _replace(Path(os.path.realpath(name)), data, None if mode is None else stat.S_IMODE(mode) & 0o777)
    elif stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        _write_in_place(name, data)
    elif stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "it is a directory, not a file", name)
    else:
        raise OSError(errno.EINVAL, f"it is {file_kind(mode)}, not a file to write a report to", name)


def _own_descriptor(name: str) -> int | None:
    """The descriptor of this process that ``name`` names, following links (``/dev/stdout`` ->
    ``/proc/self/fd/1``); None for any other path. Written through rather than reopened: reopening
    ``/proc/self/fd/1`` starts at offset 0, over what the shell appended to or what was printed before."""
    current = os.path.abspath(name)
    for _ in range(_MAX_LINKS):
        match = _OWN_DESCRIPTOR.fullmatch(current)
        if match:
            pid = match.group("pid")
            return int(match.group("fd")) if pid is None or int(pid) == os.getpid() else None
        try:
            link = os.readlink(current)
        except OSError:  # not a link (or not there): a plain path
            return None
        current = os.path.normpath(os.path.join(os.path.realpath(os.path.dirname(current)), link))
    return None


def _write_descriptor(descriptor: int, data: bytes) -> None:
    # What Python printed to the same descriptor and holds in its buffer goes first.
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and stream.fileno() == descriptor:
                stream.flush()
        except (AttributeError, OSError, ValueError):  # a stream with no descriptor (a test's capture)
            pass
    _write_all(descriptor, data)


def _write_in_place(target: str, data: bytes) -> None:
    """A character device or a FIFO: opened for writing as it is, never created, truncated or replaced.
    (A FIFO waits for its reader, as any writer to it does.)"""
    descriptor = os.open(target, os.O_WRONLY | getattr(os, "O_NOCTTY", 0))
    try:
        _write_all(descriptor, data)
    finally:
        os.close(descriptor)


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


def _replace(target: Path, data: bytes, mode: int | None) -> None:
    """A regular file (or a new one) replaced whole; an existing file keeps its permissions."""
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never write through a file or link someone else put there; mode 0o666 lets the umask
        # decide the permissions of a new file, as for any file the user creates (mkstemp would make it 0600).
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as stream:
            if mode is not None and hasattr(os, "fchmod"):  # a report the user made private stays private
                os.fchmod(stream.fileno(), mode)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class NotARegularFileError(OSError):
    """A device, FIFO or socket where a file to read was expected."""


class FileTooLargeError(OSError):
    """A file larger than its reader accepts."""


def read_regular_file(path: Path, max_bytes: int | None = None) -> bytes:
    """The bytes of ``path`` if it is a regular file (after symlinks) of at most ``max_bytes``. A device
    (/dev/zero) never ends and a FIFO blocks until someone writes: both raise NotARegularFileError, checked
    on the open descriptor (O_NONBLOCK: opening a FIFO does not wait for a writer), so the file cannot be
    swapped between the check and the read. Too large: FileTooLargeError. Other failures: OSError."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(descriptor, "rb") as stream:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise NotARegularFileError(f"{path} is {file_kind(mode)}, not a regular file")
        data = stream.read() if max_bytes is None else stream.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise FileTooLargeError(f"{path} is larger than {max_bytes} bytes")
    return data


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, for a sentence: "a named pipe (FIFO)", "a socket", ..."""
    for test, kind in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):  # fmt: skip
        if test(mode):
            return kind
    return "a special file"
