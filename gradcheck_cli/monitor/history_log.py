"""Where a Monitor writes its history: the JSON-lines log appended to as the run goes, and the whole file of
``monitor.write_history``. No torch."""

from __future__ import annotations

import os
from pathlib import Path

from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.common.files import write_whole
from gradcheck_cli.monitor.history import (
    HistoryHeader,
    StepRecord,
    header_document,
    history_text,
    json_line,
    record_document,
)


class HistoryLog:
    """The log file: created empty at once, so that a path that cannot be written fails when the Monitor is made,
    not a hundred steps into the run; the header (as it is by then: the layers settle at the first step) goes
    in with the first record, each record is appended as a line, and no file stays open."""

    def __init__(self, path: str | os.PathLike, header: HistoryHeader):
        self.path = Path(path)
        self._header = header
        self._started = False
        self._write("")

    def append(self, record: StepRecord) -> None:
        self._write(json_line(record_document(record)))

    def _write(self, line: str) -> None:
        try:
            if not self._started:
                if line:
                    text = json_line(header_document(self._header)) + line
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self.path.write_text(text, encoding="utf-8")
                    self._started = True
                else:  # at construction: create (empty) the file the header and records will go to
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self.path.write_text("", encoding="utf-8")
                return
            with self.path.open("a", encoding="utf-8") as stream:
                stream.write(line)
        except OSError as error:
            raise GradcheckError(f"Cannot write the history to {self.path}: {error.strerror or error}.") from error


def write_history(path: str | os.PathLike, header: HistoryHeader, records: list[StepRecord]) -> None:
    """The header and ``records`` as JSON lines (whole, or not at all)."""
    try:
        write_whole(Path(path), history_text(header, records))
    except OSError as error:
        raise GradcheckError(f"Cannot write the history to {path}: {error.strerror or error}.") from error
