"""The one exception family. The CLI turns these into one sentence on stderr and exit code 2 in one place:
``Invocation.error`` in gradcheck_cli/cli/invocation.py, whose ``failed`` is the only code that sets 2 (Typer
exits 2 by itself for a command line it cannot parse)."""

MAX_QUOTED_CHARS = 300  # of another exception's text inside one of our sentences


class GradcheckError(Exception):
    """A problem with what the user asked for; the message says what is wrong and what to do."""


class InvalidOptionError(GradcheckError):
    """An option value or combination that cannot work."""


class ModelRunError(GradcheckError):
    """The user's model failed while gradcheck ran it; the message names where."""

    def __init__(self, message: str, stage: str = "", layer: str | None = None):
        super().__init__(message)
        self.stage = stage  # "forward pass", "loss" or "backward pass"
        self.layer = layer  # the innermost module whose forward raised, when known


class UserCodeExit(ModelRunError):
    """The user's code raised SystemExit (``sys.exit``, ``exit()``): a scan that ends so was not measured."""


class RepeatCallError(ModelRunError):
    """The model ran, then failed when called again with inputs of the same shapes: it keeps state between
    calls, so other inputs are not the way out (scan_model's input hint does not apply)."""


def describe_exception(error: BaseException) -> str:
    """``Type: message`` on one line, for a sentence that quotes the user's (or torch's) exception."""
    return f"{type(error).__name__}: {quoted(error)}"


def quoted(error: BaseException) -> str:
    """An exception's message on one line. TorchScript interpreter errors carry both tracebacks in their
    message: only their last line, the error itself, is kept. A long text keeps its start and its end."""
    text = str(error)
    if "Traceback of TorchScript" in text:
        text = next((line for line in reversed(text.splitlines()) if line.strip()), text)
    text = " ".join(text.split())
    if len(text) > MAX_QUOTED_CHARS:
        half = MAX_QUOTED_CHARS // 2
        text = f"{text[:half]} ... {text[-half:]}"
    return text
