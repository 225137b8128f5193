"""Where and in what precision the passes run (``--device``, ``--amp``), passed explicitly: the probe, the
Python API and every trial on a copy take a ``Placement`` argument; nothing is read from global state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradcheck_cli.common.errors import InvalidOptionError


@dataclass(frozen=True)
class Placement:
    """Where and in what precision a command's passes run."""

    device: torch.device | None = None  # None: wherever the model's parameters are
    amp: torch.dtype | None = None  # torch.bfloat16 or torch.float16: the passes run under autocast


def move_to_placement(model: nn.Module, placement: Placement) -> None:
    """Move a model gradcheck built or loaded (never a user's object) to the command's --device."""
    device = placement.device
    params = list(model.parameters())
    # A model on the meta device holds no data to move: inputs.py says what to do about it.
    if device is not None and not any(p.device.type == "meta" for p in params):
        model.to(device)


def cli_spelling(name: str, value: str) -> str:
    """An option as the command line spells it, e.g. ``--device cuda``."""
    return f"--{name} {value}"


def api_spelling(name: str, value: str) -> str:
    """An argument as the Python API spells it, e.g. ``device='cuda'``."""
    return f"{name}={value!r}"


def resolve_placement(
    device: str = "auto", amp: str | None = None, spelling: Callable[[str, str], str] = cli_spelling
) -> Placement:
    """--device and --amp as torch values, or one sentence saying why this machine cannot run them (naming the
    options as ``spelling`` writes them: the command line's, or the Python API's)."""
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise InvalidOptionError(
            f"{spelling('device', 'cuda')}: torch sees no CUDA device on this machine (torch.cuda.is_available() is "
            f"False); use {spelling('device', 'cpu')}, or auto."
        )
    chosen = torch.device("cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[amp]
    if dtype is torch.bfloat16 and chosen.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InvalidOptionError(
            f"{spelling('amp', 'bf16')}: this GPU has no bfloat16 support; use {spelling('amp', 'fp16')}."
        )
    return Placement(chosen, dtype)


AS_PLACED = Placement()  # the default: the passes run where the model's parameters are, without autocast
