"""What the CLI and its worker process say to each other (gradcheck_cli/cli/isolation.py runs the worker,
gradcheck_cli/cli/worker.py is it): the jobs of one command, the request that carries them, each job's outcome,
the frame every message travels in, and the only classes a report may be unpickled into. No torch here.
"""

from __future__ import annotations

import dataclasses
import enum
import pickle
import struct
from dataclasses import dataclass
from typing import Any

from gradcheck_cli.common.options import ScanOptions
from gradcheck_cli.judge.diagnosis import Thresholds

# Every message is a pickle behind its length, as 4 bytes little-endian.
FRAME_HEADER = struct.Struct("<I")


@dataclass(frozen=True)
class Limits:
    timeout: float | None  # seconds for one job, None: no limit
    max_memory: int  # bytes the worker (and what it starts) may use


@dataclass(frozen=True)
class ScanJob:
    target: str
    options: ScanOptions
    thresholds: Thresholds
    device: str = "auto"
    amp: str | None = None

    @property
    def label(self) -> str:
        return self.target


@dataclass(frozen=True)
class DemoJob:
    spec: dict[str, Any]  # presets.DemoSpec's fields (DemoSpec imports torch)
    run: dict[str, Any]  # demo.run_demo's keyword arguments
    device: str = "auto"
    amp: str | None = None
    label: str = "demo"


Job = ScanJob | DemoJob


@dataclass(frozen=True)
class Distributed:
    """A torchrun process's worker joins the job's process group and scans every target in it."""

    fsdp: bool
    device: str


@dataclass
class Request:
    jobs: list[Job]
    limits: Limits
    distributed: Distributed | None = None


@dataclass
class Outcome:
    """What became of one job: a report, or one sentence (and, with --debug, the worker's traceback)."""

    index: int
    report: Any = None
    error: str | None = None
    details: str = ""  # the traceback, shown with --debug


class ReportUnpickler(pickle.Unpickler):
    """Builds gradcheck's own data classes and enums, and nothing else: no function, no other module."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("gradcheck_cli.") and "." not in name:
            found = super().find_class(module, name)
            if isinstance(found, type) and (dataclasses.is_dataclass(found) or issubclass(found, enum.Enum)):
                return found
        raise pickle.UnpicklingError(f"the worker sent {module}.{name}, which is not part of a report")
