"""The process boundary: the CLI runs the user's code in a worker process and gets each report back as data.

A model file is code, and code can end the process it runs in: ``sys.exit(0)``, ``os._exit``, a segfault,
the kernel's out-of-memory killer, a hang. In the CLI's own process any of these could end a scan as if it
had passed. Here the CLI (which needs no torch) starts ``gradcheck_cli.cli.worker`` with the jobs of one command,
and hears from it, over a pipe of its own, each job's start, each stage of the user's code as it begins
(gradcheck_cli/common/stages.py), and each job's report or error. A worker that stops without a report leaves one
sentence for the job it was running, naming the stage and what happened, and a fresh worker takes the jobs
after it. The worker's stdout and stderr come to the CLI's stderr, each line labelled with its target, so
stdout carries the report alone. ``Limits`` bounds each job's time and the worker's memory.

Reports are sent as pickles of gradcheck's own report classes; the CLI unpickles them with an allow-list of
exactly those classes (``jobs.ReportUnpickler``), so a worker cannot make the CLI build anything else. This is no
sandbox: the user's code runs with the user's rights (see docs/security.md).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from gradcheck_cli.cli.jobs import FRAME_HEADER, Job, Limits, Outcome, ReportUnpickler, Request
from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.common.limits import show_bytes

# The test suite's seam: with this set to 1 the jobs run in the calling process, through the same messages,
# so the many CLI tests about options and output do not each pay a worker's start (an `import torch`).
# tests/test_isolation.py runs without it. Not for users: it gives up everything this module is for.
INLINE_VARIABLE = "GRADCHECK_INLINE_WORKER"
# The worker needs POSIX pipes, sessions and select() on pipes. Elsewhere (Windows) the jobs run in the CLI's
# process, as the Python API does, and the CLI says what that gives up.
WORKER_SUPPORTED = os.name == "posix"
NO_WORKER_NOTE = (
    "note: on this system the model runs in gradcheck's own process: sys.exit in it is still an error, but "
    "a crash ends gradcheck, and --timeout and --max-memory are not enforced (they need a POSIX system)."
)
POLL_SECONDS = 0.1  # how often the memory watchdog reads the worker's resident size
KILL_GRACE_SECONDS = 2.0  # after SIGTERM, before SIGKILL


class WorkerRun:
    """The jobs of one command in worker processes: ``outcomes()`` yields one Outcome per job, in order;
    ``agree(exit_code)`` (under torchrun) gives the first process's exit code on every process. Without a
    distributed run, a worker that dies is replaced for the jobs after the one it was running."""

    def __init__(self, request: Request, relay: Callable[[str, str], None]):
        self.request, self.relay = request, relay
        self.worker: _Worker | None = None
        self._scratch = ""

    def __enter__(self) -> WorkerRun:
        self._scratch = tempfile.mkdtemp(prefix="gradcheck-")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.worker is not None:
                _stop(self.worker)
        finally:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def outcomes(self) -> Iterator[Outcome]:
        request = self.request
        if request.distributed is None and (not WORKER_SUPPORTED or os.environ.get(INLINE_VARIABLE) == "1"):
            from gradcheck_cli.cli.worker import run_inline

            if not WORKER_SUPPORTED:
                self.relay("gradcheck", NO_WORKER_NOTE)
            yield from run_inline(request)
            return
        pending = list(range(len(request.jobs)))
        while pending:
            if self.worker is not None:
                _stop(self.worker)
            self.worker = _start(request, pending, self._scratch)
            for outcome in _collect(self.worker, request, self.relay):
                pending.remove(outcome.index)
                yield outcome
            if pending and request.distributed is not None:
                for index in pending:  # the process group is broken: its other processes have failed too
                    yield Outcome(index, error=f"{request.jobs[index].label}: not scanned; an earlier target "
                                  "ended this process's worker, and with it the distributed run.")  # fmt: skip
                return

    def agree(self, exit_code: int) -> int | None:
        """Under torchrun, the first process's exit code (it wrote the report) on every process; None where
        this process's worker is gone, since then the processes cannot agree (the CLI exits 2)."""
        worker = self.worker
        if self.request.distributed is None:
            return exit_code
        if worker is None or worker.process.poll() is not None:
            return None
        try:
            os.write(worker.jobs, pickle.dumps(exit_code))
        except OSError:
            return None
        for message in _messages(worker, self.request.limits.timeout):
            if message[0] == "agreed":
                return int(message[1])
        return None


# --- The worker's start and stop ----------------------------------------------------------------------

WORKER_COMMAND = "import sys; del sys.path[0]; from gradcheck_cli.cli.worker import main; main()"


@dataclass
class _Worker:
    process: subprocess.Popen
    jobs: int  # the write end of the job pipe (held open: a distributed run's exit code goes that way)
    results: int  # the read end of the result pipe
    output: int  # the read end of the worker's stdout + stderr
    buffer: bytearray = field(default_factory=bytearray)
    text: bytearray = field(default_factory=bytearray)
    current: int | None = None  # the job it is running
    stage: str | None = None
    started: float = 0.0
    finished: bool = False  # it said it has run every job
    completed: int = 0  # jobs it reported on


def _start(request: Request, pending: list[int], scratch: str) -> _Worker:
    job_read, job_write = os.pipe()
    result_read, result_write = os.pipe()
    output_read, output_write = os.pipe()
    todo = dataclasses.replace(request, jobs=[request.jobs[i] for i in pending])
    # ``-c`` with the working folder taken off sys.path: a torch.py or gradcheck_cli/ of the user's there
    # must not stand in for the real ones (the model's own folder is put on the path while it is imported).
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER_COMMAND, str(job_read), str(result_write)],
            stdin=subprocess.DEVNULL,  # input() in the user's code fails at once instead of waiting
            stdout=output_write,
            stderr=output_write,
            pass_fds=(job_read, result_write),
            env=_worker_environment(scratch),
            start_new_session=True,  # its own process group: stopped as one, with whatever it starts
        )
    except OSError:
        for end in (job_read, job_write, result_read, result_write, output_read, output_write):
            os.close(end)
        raise
    for end in (job_read, result_write, output_write):
        os.close(end)
    worker = _Worker(process, job_write, result_read, output_read)
    try:
        _write_all(job_write, pickle.dumps((pending, todo)))
    except OSError:
        pass  # the worker died before it read its jobs: _collect reports how it ended
    return worker


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


def _worker_environment(scratch: str) -> dict[str, str]:
    """Nothing written where the user did not ask: no bytecode beside their files, compiler caches and
    temporary files in a folder of gradcheck's own (removed afterwards). Caches the user set are kept."""
    environment = dict(os.environ)
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    environment["PYTHONUNBUFFERED"] = "1"  # the user's prints arrive in order, before a crash
    environment["TMPDIR"] = scratch
    for name, folder in (("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("TRITON_CACHE_DIR", "triton"),
                         ("MPLCONFIGDIR", "matplotlib")):  # fmt: skip
        if not environment.get(name):
            environment[name] = os.path.join(scratch, folder)
    return environment


def _stop(worker: _Worker) -> None:
    """End the worker's process group (it may have started processes of its own) and close the pipes. A
    worker that said it finished is given a moment to exit by itself."""
    process = worker.process
    if worker.finished:
        try:
            process.wait(KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process, signal.SIGKILL)  # whatever of the group is still there
    process.wait()
    for end in (worker.jobs, worker.results, worker.output):
        try:
            os.close(end)
        except OSError:
            pass


def _signal_group(process: subprocess.Popen, number: int) -> None:
    try:
        os.killpg(process.pid, number)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def _stopped_on_sigterm(worker: _Worker) -> Iterator[None]:
    """SIGTERM to the CLI ends the worker's group too, then the CLI as the signal would (exit 143). Ctrl-C
    reaches only the CLI (the worker has a session of its own): KeyboardInterrupt stops the worker on its
    way out, through WorkerRun.__exit__."""

    def terminate(number: int, frame: Any) -> None:
        _signal_group(worker.process, signal.SIGKILL)
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (a program embedding the CLI): its own handlers stay
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- Hearing from the worker --------------------------------------------------------------------------


def _collect(worker: _Worker, request: Request, relay: Callable[[str, str], None]) -> Iterator[Outcome]:
    """The outcomes of the worker's jobs until it says it finished, or stops, or breaks a limit."""
    jobs, limits = request.jobs, request.limits
    with _stopped_on_sigterm(worker):
        while True:
            label = jobs[worker.current].label if worker.current is not None else "gradcheck"
            wait = POLL_SECONDS
            if limits.timeout is not None and worker.current is not None:
                left = worker.started + limits.timeout - time.monotonic()
                if left <= 0:
                    _drain_output(worker, label, relay)
                    yield _failed(worker, jobs, f"did not finish within --timeout {limits.timeout:g} s",
                                  hint="raise --timeout (0: no limit) if it needs longer")  # fmt: skip
                    return
                wait = min(wait, left)
            ended = _poll(worker, wait, label, relay)
            for message in _frames(worker):
                outcome = _handle(worker, message)
                if outcome is not None:
                    yield outcome
                if worker.finished:
                    _drain_output(worker, label, relay)
                    return
            if ended:
                _drain_output(worker, label, relay)
                if worker.current is None and worker.completed:
                    return  # it died between jobs (say, freeing the last model): a fresh one takes the rest
                if worker.current is None:
                    raise WorkerFailed(
                        f"gradcheck's worker process ended before it ran a target "
                        f"({_exit_status(worker.process.wait())}); what it printed (above, unless --silent) says why."
                    )
                yield _failed(worker, jobs, _how_it_ended(worker.process.wait(), limits))
                return
            resident = _resident_bytes(worker.process.pid)
            if resident is not None and resident > limits.max_memory and worker.current is not None:
                _drain_output(worker, label, relay)
                yield _failed(worker, jobs, f"used {show_bytes(resident)} of memory, over --max-memory "
                              f"{show_bytes(limits.max_memory)}, and was stopped",
                              hint="raise --max-memory, or scan with smaller inputs (--batch-size, --input-shape)")  # fmt: skip
                return


def _poll(worker: _Worker, wait: float, label: str, relay: Callable[[str, str], None]) -> bool:
    """Read what is ready within ``wait`` seconds; True once the result pipe has closed (the worker ended)."""
    ready = select.select([worker.results, worker.output], [], [], wait)[0]
    if worker.output in ready:
        _read_output(worker, label, relay)
    if worker.results in ready:
        chunk = os.read(worker.results, 1 << 16)
        if not chunk:
            return True
        worker.buffer += chunk
    return False


def _messages(worker: _Worker, timeout: float | None) -> Iterator[tuple]:
    """Frames from a worker after its jobs (the distributed exit code), until it ends or ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while deadline is None or time.monotonic() < deadline:
        ended = _poll(worker, POLL_SECONDS, "gradcheck", lambda label, line: None)
        yield from _frames(worker)
        if ended:
            return


class WorkerFailed(GradcheckError):
    """The worker could not run a job at all (not the user's code): gradcheck's own installation is broken."""


def _handle(worker: _Worker, message: tuple) -> Outcome | None:
    kind = message[0]
    if kind == "start":
        worker.current, worker.stage, worker.started = message[1], None, time.monotonic()
    elif kind == "stage":
        worker.stage = message[1]
    elif kind == "finished":
        worker.finished = True
    elif kind in ("report", "error"):
        worker.current = None
        worker.completed += 1
        if kind == "report":
            return Outcome(message[1], report=message[2])
        return Outcome(message[1], error=message[2], details=message[3])
    return None


def _failed(worker: _Worker, jobs: list[Job], what: str, hint: str = "") -> Outcome:
    index = worker.current
    assert index is not None
    stage = worker.stage or "start"
    where = {"start": "before its code ran"}.get(stage) or f"during the {_phrase(stage)}"
    sentence = f"{jobs[index].label}: the model's code {what} {where}, so it was not measured"
    return Outcome(index, error=f"{sentence}; {hint}." if hint else f"{sentence}.")


def _phrase(stage: str) -> str:
    return {"import": "import of the model file", "build": "model's construction",
            "inputs": "making of the inputs"}.get(stage, stage)  # fmt: skip


def _how_it_ended(code: int | None, limits: Limits) -> str:
    if code is not None and code < 0:
        number = -code
        name = _signal_name(number)
        if number == signal.SIGKILL:
            return (f"was killed ({name}), most likely by the system for want of memory (the limit is "
                    f"--max-memory {show_bytes(limits.max_memory)})")  # fmt: skip
        if number in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT):
            return f"crashed the process ({name})"
        return f"was ended by {name}"
    return f"ended the process with exit status {code} (os._exit or a native library)"


def _exit_status(code: int | None) -> str:
    return f"signal {_signal_name(-code)}" if code is not None and code < 0 else f"exit status {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _read_output(worker: _Worker, label: str, relay: Callable[[str, str], None]) -> bool:
    chunk = os.read(worker.output, 1 << 16)
    if not chunk:
        if worker.text:
            relay(label, worker.text.decode("utf-8", "replace"))
            worker.text.clear()
        return False
    worker.text += chunk
    *lines, rest = worker.text.split(b"\n")
    for line in lines:
        relay(label, line.decode("utf-8", "replace"))
    worker.text[:] = rest
    return True


def _drain_output(worker: _Worker, label: str, relay: Callable[[str, str], None]) -> None:
    """What the worker printed before it stopped, read without waiting for more."""
    while select.select([worker.output], [], [], 0)[0] and _read_output(worker, label, relay):
        pass
    if worker.text:
        relay(label, worker.text.decode("utf-8", "replace"))
        worker.text.clear()


def _frames(worker: _Worker) -> Iterator[tuple]:
    buffer = worker.buffer
    while len(buffer) >= FRAME_HEADER.size:
        (size,) = FRAME_HEADER.unpack_from(buffer)
        if len(buffer) < FRAME_HEADER.size + size:
            return
        body = bytes(buffer[FRAME_HEADER.size : FRAME_HEADER.size + size])
        del buffer[: FRAME_HEADER.size + size]
        yield ReportUnpickler(io.BytesIO(body)).load()


def _resident_bytes(pid: int) -> int | None:
    """The resident memory of the worker and the processes it started (Linux /proc; None elsewhere)."""
    total = 0
    try:
        for task in _process_tree(pid):
            with open(f"/proc/{task}/statm") as statm:
                total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return total or None
    return total


def _process_tree(pid: int) -> list[int]:
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as children:
                queue.extend(int(child) for child in children.read().split())
        except OSError:
            pass
    return tree
