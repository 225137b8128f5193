"""Which stage of the user's code is running: the one sentence about a model that exits, crashes or hangs
names it (import, build, inputs, forward pass, loss, backward pass).

Two things come of it. In process, ``user_code`` turns a ``SystemExit`` raised by the user's code into a
``UserCodeExit`` error, so a model that calls ``sys.exit(0)`` can never end a scan as if it had passed.
Across the process boundary (gradcheck_cli/cli/isolation), the worker listens to ``enter`` and tells the CLI
each new stage as it starts, so a worker that dies without a word (``os._exit``, a segfault, the memory
limit) is still reported with the stage it died in. No torch here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from gradcheck_cli.common.errors import UserCodeExit

IMPORT = "import"
BUILD = "build"
INPUTS = "inputs"
FORWARD = "forward pass"
LOSS = "loss"
BACKWARD = "backward pass"

_current: str | None = None
_listener: Callable[[str], None] | None = None


def enter(stage: str) -> None:
    """Mark ``stage`` as running (cheap: the listener hears only a change of stage)."""
    global _current
    if stage != _current:
        _current = stage
        if _listener is not None:
            _listener(stage)


def current() -> str | None:
    return _current


def set_listener(listener: Callable[[str], None] | None) -> None:
    """The worker process's: called with each new stage before the user's code of that stage runs."""
    global _listener
    _listener = listener


@contextmanager
def user_code(stage: str) -> Iterator[None]:
    """Run the user's code of ``stage``; a ``SystemExit`` it raises becomes ``UserCodeExit``."""
    enter(stage)
    try:
        yield
    except SystemExit as error:
        raise exit_error(error, stage) from error


def exit_error(error: SystemExit, stage: str) -> UserCodeExit:
    code = error.code
    called = "sys.exit()" if code is None else f"sys.exit({code!r})"
    where = "while being imported" if stage == IMPORT else f"during the {_stage_phrase(stage)}"
    fix = (
        "move it under `if __name__ == '__main__':`"
        if stage == IMPORT
        else "a model file must not end the process: remove the call"
    )
    return UserCodeExit(f"the model's code called {called} {where}, so it was not measured; {fix}.", stage)


def _stage_phrase(stage: str) -> str:
    return {BUILD: "model's construction", INPUTS: "making of the inputs"}.get(stage, stage)
