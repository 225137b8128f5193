"""The worker process: it runs the user's code for the CLI and sends each report back as data.

Started by gradcheck_cli/cli/isolation.py with two pipe descriptors as arguments: it reads its ``Request`` from
the first and writes length-prefixed pickled messages to the second: ``("start", i)``, ``("stage", name)``
as each stage of the user's code begins, ``("report", i, report)`` or ``("error", i, sentence, traceback)``,
and ``("finished",)`` after the last job. Its stdout and stderr belong to the user's code (the CLI labels them
and sends them to its stderr); the worker itself prints nothing.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
import traceback
import warnings
from collections.abc import Iterator
from typing import Any, BinaryIO

from gradcheck_cli.cli.jobs import FRAME_HEADER, DemoJob, Job, Request, ScanJob
from gradcheck_cli.common import stages
from gradcheck_cli.common.errors import GradcheckError, describe_exception
from gradcheck_cli.common.limits import show_bytes

# Words of the errors an allocation raises when the memory limit (or the machine) says no.
_OUT_OF_MEMORY = ("can't allocate memory", "out of memory", "cannot allocate memory", "std::bad_alloc")


class _Channel:
    def __init__(self, stream: BinaryIO):
        self.stream = stream

    def send(self, *message: Any) -> None:
        body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.stream.write(FRAME_HEADER.pack(len(body)) + body)
        self.stream.flush()


def main() -> None:
    job_descriptor, result_descriptor = int(sys.argv[1]), int(sys.argv[2])
    _die_with_parent()
    jobs_in = os.fdopen(job_descriptor, "rb")
    indices, request = pickle.load(jobs_in)  # from the CLI that started this process
    _limit_memory(request.limits.max_memory)
    # torch warns on import when NumPy is absent; gradcheck does not use NumPy, so the warning is noise.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    channel = _Channel(os.fdopen(result_descriptor, "wb"))
    stages.set_listener(lambda stage: channel.send("stage", stage))
    with contextlib.ExitStack() as stack:
        ranks = None
        if request.distributed is not None:
            ranks = _join(stack, request, channel, indices)
            if ranks is None:
                return
        for index, job in zip(indices, request.jobs):
            channel.send("start", index)
            _run_one(index, job, ranks, request, channel)
        channel.send("finished")
        if ranks is not None:  # the CLI sends its exit code; every process leaves with the first one's
            exit_code = pickle.load(jobs_in)
            channel.send("agreed", ranks.agree_exit_code(exit_code))
    # Leave without running the user's atexit handlers or waiting on threads it started: the reports are sent.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_inline(request: Request) -> Iterator[Any]:
    """The jobs in this process, each message through the same pickling as across the pipe (isolation's
    INLINE_VARIABLE, for the test suite)."""
    from gradcheck_cli.cli.jobs import Outcome, ReportUnpickler

    frames = io.BytesIO()
    channel = _Channel(frames)
    for index, job in enumerate(request.jobs):
        frames.seek(0)
        frames.truncate()
        _run_one(index, job, None, request, channel)
        data = frames.getvalue()
        message = ReportUnpickler(io.BytesIO(data[FRAME_HEADER.size :])).load()
        if message[0] == "report":
            yield Outcome(index, report=message[2])
        else:
            yield Outcome(index, error=message[2], details=message[3])


def _run_one(index: int, job: Job, ranks: Any, request: Request, channel: _Channel) -> None:
    try:
        report = _run(job, ranks)
    except GradcheckError as error:
        channel.send("error", index, _labelled(job, _memory_sentence(error, request) or str(error)), _trace())
    except (MemoryError, RuntimeError) as error:  # an allocation the limit refused, outside the user's code
        sentence = _memory_sentence(error, request) or f"internal error: {describe_exception(error)}"
        channel.send("error", index, _labelled(job, sentence), _trace())
    except Exception as error:  # gradcheck's own failure: one sentence, the traceback behind --debug
        sentence = f"internal error while scanning: {describe_exception(error)}; rerun with --debug and report it"
        channel.send("error", index, _labelled(job, sentence), _trace())
    else:
        channel.send("report", index, report)


def _run(job: Job, ranks: Any) -> Any:
    from gradcheck_cli.measure.placement import resolve_placement

    placement = resolve_placement(job.device, job.amp)
    if isinstance(job, ScanJob):
        from gradcheck_cli.scan.scan import scan_target

        return scan_target(job.target, job.options, job.thresholds, ranks=ranks, placement=placement)
    assert isinstance(job, DemoJob)
    from gradcheck_cli.trials.demo import run_demo
    from gradcheck_cli.trials.presets import DemoSpec

    return run_demo(DemoSpec(**job.spec), **job.run, placement=placement)


def _join(stack: contextlib.ExitStack, request: Request, channel: _Channel, indices: list[int]) -> Any:
    """Join the torchrun job's process group; a failure is every job's error."""
    from gradcheck_cli.load.distributed import distributed_run
    from gradcheck_cli.load.torchrun import torchrun_rank

    distributed = request.distributed
    assert distributed is not None
    try:
        rank = torchrun_rank(True, distributed.fsdp)
        return stack.enter_context(distributed_run(rank, fsdp=distributed.fsdp, device=distributed.device))
    except GradcheckError as error:
        for index, job in zip(indices, request.jobs):
            channel.send("start", index)
            channel.send("error", index, _labelled(job, str(error)), _trace())
        channel.send("finished")
        return None


def _labelled(job: Job, sentence: str) -> str:
    """The sentence as the CLI prints it: scan errors name their target unless they already do."""
    if isinstance(job, ScanJob) and not sentence.startswith(job.target):
        return f"{job.target}: {sentence}"
    return sentence


def _memory_sentence(error: BaseException, request: Request) -> str | None:
    """One sentence for an allocation refused for want of memory, anywhere in the error's causes."""
    seen: BaseException | None = error
    while seen is not None:
        text = str(seen).lower()
        if isinstance(seen, MemoryError) or any(words in text for words in _OUT_OF_MEMORY):
            stage = stages.current()
            where = f" during the {stage}" if stage else ""
            return (
                f"ran out of memory{where}: an allocation went past --max-memory "
                f"{show_bytes(request.limits.max_memory)} or what the machine has; scan with smaller inputs "
                "(--batch-size, --input-shape) or raise --max-memory."
            )
        seen = seen.__cause__ or seen.__context__
    return None


def _trace() -> str:
    return traceback.format_exc()


def _limit_memory(max_memory: int) -> None:
    """A hard limit on the worker's data memory, so an allocation past --max-memory fails in the worker
    (an error it can name) rather than in the machine. Not where an NVIDIA GPU is present: the CUDA driver's
    mappings would count against it. The CLI's watchdog on resident memory covers every case."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    if any(os.path.exists(node) for node in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")):
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    wanted = max_memory if hard == resource.RLIM_INFINITY else min(max_memory, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_DATA, (wanted, hard))


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when the CLI dies (even by SIGKILL), so no scan runs on unwatched."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the call
            os._exit(1)
