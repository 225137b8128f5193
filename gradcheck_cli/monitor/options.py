"""The Monitor's arguments checked, each with a message that says what to pass instead. No torch."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from gradcheck_cli.common.errors import InvalidOptionError
from gradcheck_cli.monitor.history import Problem


class OnProblem(str, Enum):
    """What the monitor does when it finds a problem (it is always kept in ``monitor.problems``)."""

    WARN = "warn"  # warnings.warn(GradientProblemWarning) with the problem's one-line message
    RAISE = "raise"  # raise GradientProblemError from the step() that found it
    RECORD = "record"  # nothing more: read monitor.problems or the history


ProblemHandler = Callable[[Problem], None]


def checked_thresholds(thresholds: Any):
    """The scan's ``Thresholds`` given, or the defaults where none were."""
    from gradcheck_cli.judge.diagnosis import Thresholds

    if thresholds is None:
        return Thresholds()
    if not isinstance(thresholds, Thresholds):
        raise InvalidOptionError(
            f"thresholds must be a gradcheck_cli.Thresholds (got {type(thresholds).__name__}); "
            "e.g. Thresholds(decades_error=3)."
        )
    return thresholds


def whole_number(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidOptionError(f"{name} must be a whole number of at least {minimum} (got {value!r}).")
    return value


def problem_handler(value: Any) -> OnProblem | ProblemHandler:
    """``on_problem`` as an OnProblem, or the function it names."""
    if isinstance(value, OnProblem):
        return value
    if isinstance(value, str):
        try:
            return OnProblem(value)
        except ValueError:
            choices = ", ".join(repr(choice.value) for choice in OnProblem)
            raise InvalidOptionError(
                f"on_problem must be one of {choices}, or a function of the problem (got {value!r})."
            ) from None
    if callable(value):
        return value
    raise InvalidOptionError(f"on_problem must be 'warn', 'raise', 'record' or a function (got {value!r}).")
