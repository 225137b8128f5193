"""What loading returns: the user's model, how it was found, and what came with it (the file's globals,
inputs saved with a program, the place it is defined)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class LoadedModel:
    model: nn.Module
    description: str  # how it was found, e.g. "build_model() in examples/mlp.py"
    namespace: dict[str, Any] = field(default_factory=dict)  # the file's globals: example_inputs, loss_fn
    saved_inputs: tuple[tuple, dict] | None = None  # (args, kwargs) stored with a torch.export program
    # Where the model is defined, for annotations that point at it (SARIF, GitHub): the file, and the
    # line of the factory, class or assignment used (None for a saved model).
    source_path: str | None = None
    source_line: int | None = None
