"""The range of every number a user gives, declared once for the command line, the config file and the API.

A number outside its range is refused where it enters, in one sentence that says the range and an example,
instead of failing later inside torch (a seed past 2**64 overflows ``manual_seed``; a billion passes never
end). The maxima are far above any real use; each says why it is where it is. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradcheck_cli.common.errors import InvalidOptionError


@dataclass(frozen=True)
class Range:
    minimum: float
    maximum: float
    integer: bool = True
    example: str = ""
    above_minimum: bool = False  # the minimum itself is not allowed (a learning rate of 0)

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.above_minimum:
            return f"{kind} greater than {_show(self.minimum)} and at most {_show(self.maximum)}"
        return f"{kind} from {_show(self.minimum)} to {_show(self.maximum)}"

    def holds(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value) or value > self.maximum:
            return False
        return value > self.minimum if self.above_minimum else value >= self.minimum


def _show(value: float) -> str:
    if isinstance(value, int) and value >= 10**6:
        return f"{value:,}".replace(",", "_")
    return f"{value:g}"


RANGES: dict[str, Range] = {
    # torch.manual_seed takes 64 bits; 2**63 - 1 also fits the signed seeds other libraries use.
    "seed": Range(0, 2**63 - 1, example="0"),
    # Each pass is one forward and backward; a thousand already takes minutes on a real model.
    "passes": Range(1, 1000, example="3"),
    "steps": Range(0, 100_000, example="5"),
    # Token ids are drawn below the vocabulary size as int64; no tokenizer has more than 2**31 entries.
    "vocab_size": Range(1, 2**31 - 1, example="32000"),
    "seq_len": Range(1, 2**31 - 1, example="128"),
    "batch_size": Range(1, 2**31 - 1, example="8"),
    # One dimension of --input-shape; the whole tensor is also held to --max-memory.
    "input_dim": Range(1, 2**31 - 1, example="8,3,32,32"),
    # demo: layers and units; the deepest model gradcheck handles is measured in benchmarks/RESULTS.md.
    "depth": Range(1, 100_000, example="50"),
    "width": Range(1, 65_536, example="256"),
    "seq_len_demo": Range(1, 100_000, example="50"),
    "gain": Range(0, 1e6, integer=False, example="1.0", above_minimum=True),
    # A learning rate is positive and finite; 1e3 is already far beyond any optimizer's stable range.
    "lr": Range(0, 1e3, integer=False, example="1e-3", above_minimum=True),
    "baseline_tolerance": Range(1, 1e12, integer=False, example="10", above_minimum=True),
    # Seconds a scan target may take in its worker process (0: no limit); a week is the most.
    "timeout": Range(0, 7 * 24 * 3600, integer=False, example="600"),
}


def range_problem(name: str, value: object) -> str | None:
    """What is wrong with ``value`` for the setting ``name`` ("must be an integer from 0 to ..."), or None."""
    allowed = RANGES[name]
    if allowed.holds(value):
        return None
    return f"must be {allowed.describe()}"


def check_range(name: str, value: object, shown_as: str | None = None) -> object:
    """``value`` if it is in the range of ``name``; else InvalidOptionError naming ``shown_as`` (default
    ``--name``), the range and an example."""
    problem = range_problem(name, value)
    if problem is None:
        return value
    shown_as = shown_as or "--" + name.replace("_", "-")
    example = RANGES[name].example
    hint = f"; try {shown_as} {example}" if shown_as.startswith("--") else f", e.g. {shown_as}={example}"
    raise InvalidOptionError(f"{shown_as} {problem} (got {value!r}){hint}.")


# --max-memory: a size with a binary unit, or a share of the machine's memory.
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
DEFAULT_MEMORY_SHARE = 0.75  # of the machine's (or the container's) memory: room is left for the system
MIN_MEMORY = 256 * 2**20  # below this even `import torch` fails, which would read as the model's fault


def parse_memory(text: str, shown_as: str = "--max-memory") -> int:
    """'8G', '512MiB', '75%' or a number of bytes -> bytes. Units are binary (G = 2**30 bytes)."""
    cleaned = str(text).strip().upper().removesuffix("B").removesuffix("I")
    try:
        if cleaned.endswith("%"):
            share = float(cleaned[:-1])
            if not 0 < share <= 100:
                raise ValueError
            size = int(machine_memory() * share / 100)
        else:
            unit = cleaned[-1:] if cleaned[-1:] in _UNITS else ""
            number = float(cleaned[: len(cleaned) - len(unit)])
            if not math.isfinite(number):
                raise ValueError
            size = int(number * _UNITS[unit])
    except (ValueError, OverflowError):
        raise InvalidOptionError(
            f"{shown_as} takes a size such as 8G, 512M or 75% (of this machine's memory), not {text!r}."
        ) from None
    if size < MIN_MEMORY:
        raise InvalidOptionError(f"{shown_as} {text} is below 256M, too little to run torch; try {shown_as} 4G.")
    return size


def machine_memory() -> int:
    """Physical memory, or the container's limit (cgroup v2 / v1) where that is lower."""
    import os

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit_file) as file:
                value = file.read().strip()
        except OSError:
            continue
        if value.isdigit():
            total = min(total, int(value))
    return total


def default_memory() -> int:
    return int(machine_memory() * DEFAULT_MEMORY_SHARE)


def show_bytes(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= _UNITS[unit]:
            return f"{size / _UNITS[unit]:.3g}{unit}"
    return f"{size}B"
