"""What an op made of its operands: the domain each op keeps to (a log's positive inputs, a division's divisor
away from 0), the operand's range, and why its output is NaN/Inf, or its slope infinite, at those values."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from gradcheck_cli.common.stats import NonfiniteOp
from gradcheck_cli.measure.nonfinite.tally import Tally

# A quotient that overflowed on a divisor no closer to 0 than this came from a large numerator, not a divisor
# near 0: no domain was left (the safe form clamps divisors at 1e-6 in float32: SAFE_OP_DEFAULT_EPS in
# judge/fixes_safe_op.py).
TINY_DIVISOR = 1e-6


@dataclass
class SeenOp:
    op: NonfiniteOp
    mask_like: bool  # made only -Inf from finite inputs: an additive mask made on purpose (log of a 0/1 mask)


# Ops with a domain, by the name torch gives them (in-place "log_" and operator "__rtruediv__" forms are
# reduced to these first): the domain their safe form keeps to.
_UNARY_DOMAINS = {
    "log": "log",
    "log2": "log",
    "log10": "log",
    "log1p": "log1p",
    "sqrt": "sqrt",
    "rsqrt": "rsqrt",
    "acos": "acos",
    "arccos": "acos",
    "asin": "asin",
    "arcsin": "asin",
    "atanh": "atanh",
    "arctanh": "atanh",
    "exp": "exp",
    "expm1": "exp",
    "reciprocal": "division",
}
# Binary ops: (the operand out of its domain, the other one) as positions in the call, and its domain.
_BINARY_DOMAINS = {
    "div": ((1, 0), "division"),
    "divide": ((1, 0), "division"),
    "true_divide": ((1, 0), "division"),
    "floor_divide": ((1, 0), "division"),
    "rdiv": ((0, 1), "division"),  # 1 / x calls x.__rdiv__(1)
    "pow": ((0, 1), "pow"),
    "float_power": ((0, 1), "pow"),
    "rpow": ((1, 0), "pow"),  # 2 ** x calls x.__rpow__(2)
}
# Python operators and their in-place forms, as torch names the methods behind them.
_OPERATORS = {
    "truediv": "div",
    "rtruediv": "rdiv",
    "floordiv": "floor_divide",
    "rfloordiv": "floor_divide",
    "itruediv": "div",
    "idiv": "div",
    "ifloordiv": "floor_divide",
    "ipow": "pow",
    "iadd": "add",
    "isub": "sub",
    "imul": "mul",
}
_REFLECTED = {"rdiv": "div", "rpow": "pow"}  # 1 / x and 2 ** x, named as the op they compute
_IN_PLACE_OPERATORS = {"itruediv", "idiv", "ifloordiv", "ipow", "iadd", "isub", "imul"}
# Namespaces of functions that are not torch.*: (module torch reports, the public name, prefix of the C name).
_NAMESPACES = (
    ("torch.nn.functional", "torch.nn.functional", ""),
    ("torch._C._nn", "torch.nn.functional", ""),
    ("torch._C._special", "torch.special", "special_"),
    ("torch._C._linalg", "torch.linalg", "linalg_"),
    ("torch._C._fft", "torch.fft", "fft_"),
)


@dataclass(frozen=True)
class OpName:
    base: str  # "log", "div", "rdiv", "pow": the key of the tables above
    display: str  # "torch.log", "torch.div"
    in_place: bool

    @staticmethod
    def of(func: Callable) -> OpName:
        name = getattr(func, "__name__", None) or type(func).__name__
        in_place = False
        if name.startswith("__") and name.endswith("__"):
            name = name.strip("_")
            in_place = name in _IN_PLACE_OPERATORS
            name = _OPERATORS.get(name, name)
        elif name.endswith("_") and not name.startswith("_"):
            name, in_place = name[:-1], True
        module = getattr(func, "__module__", None) or ""
        display = f"torch.{_REFLECTED.get(name, name)}"
        for reported, public, prefix in _NAMESPACES:
            if module == reported:
                display = f"{public}.{name.removeprefix(prefix)}"
        return OpName(name, display, in_place)


@dataclass
class _Values:
    """What an operand held: a tensor's values summed up, or a Python number."""

    finite: bool
    low: float | None  # over the finite values; None when there are none
    high: float | None
    zero: bool  # holds an exact 0
    smallest: float | None  # the smallest |value| over the finite values
    dtype: str
    number: float | None = None  # the operand was this Python number

    @property
    def range(self) -> tuple[float, float] | None:
        return None if self.low is None or self.high is None else (self.low, self.high)

    @staticmethod
    def of(value: Any) -> _Values | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            number = float(value)
            finite = math.isfinite(number)
            low = number if finite else None
            return _Values(finite, low, low, number == 0, abs(number) if finite else None, type(value).__name__, number)
        if not isinstance(value, torch.Tensor) or not plain(value) or value.is_complex() or value.dtype is torch.bool:
            return None
        tensor = value.detach()
        dtype = str(tensor.dtype).removeprefix("torch.")
        if not tensor.is_floating_point():
            tensor = tensor.double()  # an integer divisor (a count) divides like a float one
        finite_mask = torch.isfinite(tensor)
        values = tensor[finite_mask]
        if not values.numel():
            return _Values(False, None, None, False, None, dtype)
        low, high, smallest = float(values.min()), float(values.max()), float(values.abs().min())
        return _Values(bool(finite_mask.all()), low, high, smallest == 0, smallest, dtype)


def plain(tensor: torch.Tensor) -> bool:
    """A tensor that holds its values (a Parameter too). A wrapper subclass (DTensor) is left alone: reading its
    values may take a collective, which one process alone would wait on forever."""
    return type(tensor).__torch_dispatch__ is torch.Tensor.__torch_dispatch__


def leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, (tuple, list)):
        for item in value:
            yield from leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    else:
        yield value


def domain_operands(name: OpName, args: tuple, kwargs: dict) -> tuple[_Values | None, _Values | None]:
    """(the operand that can leave its domain, the other one) of an op with a domain; else (its first
    tensor input, None)."""
    positional = list(args) + [v for k, v in kwargs.items() if k in ("input", "self", "other", "exponent")]
    if name.base in _BINARY_DOMAINS:
        (first, second), _ = _BINARY_DOMAINS[name.base]
        picked = [positional[i] if i < len(positional) else None for i in (first, second)]
        return _Values.of(picked[0]), _Values.of(picked[1])
    if name.base in _UNARY_DOMAINS and positional:
        return _Values.of(positional[0]), None
    first = next((v for v in leaves((args, kwargs)) if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
    return _Values.of(first), None


def made_nonfinite(name: OpName, operand: _Values | None, other: _Values | None, tally: Tally) -> NonfiniteOp:
    """An op that made NaN/Inf from finite inputs: which domain it left, and by how much."""
    base = name.base
    domain = _UNARY_DOMAINS.get(base) or (_BINARY_DOMAINS[base][1] if base in _BINARY_DOMAINS else None)
    low, high = (operand.low, operand.high) if operand is not None else (None, None)
    detail = None
    exponent = None
    if domain is not None and operand is not None and low is not None and high is not None:
        shown = name.display
        if domain in ("log", "sqrt", "rsqrt"):
            detail = f"{shown} of values down to {low:.3g}" if low < 0 else f"{shown} of 0"
        elif domain == "log1p":
            detail = f"{shown} of values down to {low:.3g}"
        elif domain == "division" and (operand.zero or (operand.smallest or 0.0) < TINY_DIVISOR):
            smallest = "0" if operand.zero else f"values as small as {operand.smallest:.3g}"
            detail = f"division by {smallest} (divisor in [{low:.3g}, {high:.3g}])"
        elif domain == "pow":
            exponent = other.number if other is not None else None
            power = f"the power {exponent:g}" if exponent is not None else "a tensor of powers"
            if low < 0 and (exponent is None or exponent != int(exponent)):
                detail = f"{shown} of values down to {low:.3g} to {power}"
            elif operand.zero and (exponent is None or exponent < 0):
                detail = f"{shown} of 0 to {power}"
            else:
                domain = None  # an overflow: no domain it left
        elif domain in ("acos", "asin", "atanh"):
            edge = "[-1, 1]" if domain != "atanh" else "(-1, 1)"
            detail = f"{shown} of values in [{low:.3g}, {high:.3g}] (outside {edge})"
        elif domain == "exp":
            limit = _exp_limit(operand.dtype)
            detail = f"{shown} of values up to {high:.3g} ({operand.dtype} overflows above {limit:.3g})"
    if detail is None:
        domain = None
        ranges = f" in [{low:.3g}, {high:.3g}]" if low is not None and high is not None else ""
        made = "gave NaN" if tally.nan else "overflowed"
        detail = f"{name.display}, which {made} on finite values{ranges}"
    return NonfiniteOp(
        name.display,
        domain,
        detail,
        operand.range if operand is not None else None,
        operand.dtype if operand is not None else "",
        exponent=exponent,
    )


def _exp_limit(dtype: str) -> float:
    """The largest x whose exp is finite in ``dtype`` (88.7 in float32); a Python float's for a number."""
    floating = getattr(torch, dtype, None)
    if not isinstance(floating, torch.dtype) or not floating.is_floating_point:
        floating = torch.float64
    return math.log(torch.finfo(floating).max)


# Ops whose output is finite where their slope is infinite: sqrt and fractional powers below 1 at 0, acos and
# asin at -1 and 1. The backward pass divides by 0 there (sqrt: grad / (2 * sqrt(x))) and makes Inf, or NaN.
_SINGULAR = {"sqrt", "pow", "float_power", "acos", "arccos", "asin", "arcsin"}


def singular_op(name: OpName, args: tuple, kwargs: dict) -> SeenOp | None:
    if name.base not in _SINGULAR:
        return None
    positional = list(args) + [v for k, v in kwargs.items() if k in ("input", "self", "exponent")]
    tensor = positional[0] if positional else None
    if not isinstance(tensor, torch.Tensor) or not tensor.requires_grad or not tensor.is_floating_point():
        return None  # no gradient goes through it
    if not plain(tensor):
        return None
    values = tensor.detach()
    exponent = None
    if name.base in ("pow", "float_power"):
        exponent = positional[1] if len(positional) > 1 else None
        if not isinstance(exponent, (int, float)) or not 0 < exponent < 1:
            return None
        at = "0"
        singular = bool((values == 0).any())
    elif name.base == "sqrt":
        at, singular = "0", bool((values == 0).any())
    else:
        at, singular = "-1 or 1", bool((values.abs() == 1).any())
    if not singular:
        return None
    domain = _UNARY_DOMAINS.get(name.base, "pow")
    power = f" to the power {exponent:g}" if exponent is not None else ""
    operand = _Values.of(tensor)
    detail = f"the gradient of {name.display} at {at}{power} (its slope is infinite there)"
    op = NonfiniteOp(name.display, domain, detail, operand.range, operand.dtype, True, exponent)
    return SeenOp(op, False)
