"""The one exception family. The CLI turns these into exit code 2 in one place (``cli.main``)."""


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
