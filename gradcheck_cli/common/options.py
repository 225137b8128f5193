"""What one scan is asked to do, as plain data: the CLI builds it without torch and hands it to the worker
process (gradcheck_cli/cli/isolation.py), the Python API builds it in process. No torch here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gradcheck_cli.common.choices import LossKind, Optimizer
from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.common.limits import range_problem, show_bytes

# The dtypes --input-dtype names, with their bytes per element: load/inputs.DTYPES maps these names to torch's
# dtypes (a test checks the itemsizes against torch's).
DTYPE_BYTES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "bool": 1}
# The suffixes of a saved model: a target ending so is a file to load, not package.module:factory.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pt2", ".ts", ".jit", ".torchscript", ".ckpt", ".bin")


@dataclass(frozen=True)
class InputOptions:
    shapes: tuple[tuple[int, ...], ...] = ()
    dtype: str | None = None  # a key of inputs.DTYPES; None: the model's floating dtype (int64 for tokens)
    vocab_size: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None


@dataclass(frozen=True)
class ScanOptions:
    entry: str | None = None
    paths: tuple[str, ...] = ()
    trust_pickle: bool = False
    inputs: InputOptions = field(default_factory=InputOptions)
    loss: LossKind | None = None  # None: the file's loss_fn, else chosen from the output
    passes: int = 3
    seed: int = 0
    verify: bool = False  # try every suggested fix on a copy
    steps: int = 0  # optimizer steps on a copy, measured after each
    optimizer: Optimizer = Optimizer.SGD
    ignore: tuple[str, ...] = ()  # glob patterns of layer names to measure but not judge


def split_target(target: str) -> tuple[str, str, str]:
    """'model.py:build' -> ('model.py', ':', 'build'); Windows drive letters are not split."""
    head, separator, tail = target.rpartition(":")
    if not separator or not tail or "/" in tail or "\\" in tail or len(head) <= 1:
        return target, "", ""
    return head, separator, tail


def parse_shape(text: str) -> tuple[int, ...]:
    """'8,3,32,32' or '8x3x32x32' -> (8, 3, 32, 32)."""
    parts = [p for p in text.replace("x", ",").replace(" ", "").split(",") if p]
    # isdigit alone: int() would also take "+8", "1_000" or other scripts' digits
    shape = tuple(int(p) for p in parts) if parts and all(p.isascii() and p.isdigit() for p in parts) else ()
    if not shape or any(d < 1 for d in shape):
        raise GradcheckError(f"--input-shape {text!r} is not a shape; write positive integers like 8,3,32,32.")
    too_large = [d for d in shape if range_problem("input_dim", d)]
    if too_large:
        raise GradcheckError(
            f"--input-shape {text!r} has a dimension of {too_large[0]}; each must be at most 2_147_483_647, "
            "and the whole input must fit --max-memory."
        )
    return shape


def check_input_memory(inputs: InputOptions, max_memory: int) -> None:
    """Inputs given by shape are refused before anything runs when one of them alone would not fit
    ``max_memory``. Without --input-dtype: int64 for token inputs (--vocab-size), else float32."""
    default = "int64" if inputs.vocab_size is not None else "float32"
    bytes_per_element = DTYPE_BYTES[inputs.dtype or default]
    for shape in inputs.shapes:
        size = math.prod(shape) * bytes_per_element
        if size > max_memory:
            shown = ",".join(str(d) for d in shape)
            raise GradcheckError(
                f"--input-shape {shown} alone takes {show_bytes(size)}, more than --max-memory "
                f"{show_bytes(max_memory)}; use a smaller shape or raise --max-memory."
            )
