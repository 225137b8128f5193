"""The ``thresholds`` a config file may set: the fields of ``diagnosis.Thresholds`` (their one home), kebab-case,
the learning rate aside (it is the top-level key ``lr``), and the keys still read though they decide nothing."""

from __future__ import annotations

import dataclasses

from gradcheck_cli.judge.diagnosis import Thresholds

THRESHOLD_KEYS = tuple(item.name.replace("_", "-") for item in dataclasses.fields(Thresholds) if item.name != "lr")
# Threshold keys still read, so that old files keep working, but which no longer decide anything: key -> the
# one-sentence notice loading gives (issue 22: the relative gradient is judged against the lr only).
DEPRECATED_THRESHOLD_KEYS = {
    "relative-grad-warning": (
        "'relative-grad-warning' is deprecated and ignored: a relative gradient now warns where one SGD step at "
        "--lr (or lr) would change a layer by lr-step-fraction of its norm; remove the key."
    ),
}


def merge_thresholds(
    base: tuple[tuple[str, float], ...], override: tuple[tuple[str, float], ...]
) -> tuple[tuple[str, float], ...]:
    """``override`` over ``base`` key by key, in THRESHOLD_KEYS order (snake_case names, as Thresholds takes)."""
    merged = dict(base) | dict(override)
    order = [key.replace("-", "_") for key in THRESHOLD_KEYS]
    return tuple((name, merged[name]) for name in order if name in merged)
