"""The safe_op fix (issue 22): an op that left its domain (a log of negatives, a division by 0) kept inside it,
with the eps that suits its dtype, why the domain gives NaN/Inf, and what the clamp bounds."""

from __future__ import annotations

import math
from typing import Any

from gradcheck_cli.common.choices import FixId
from gradcheck_cli.common.stats import NonfiniteOp
from gradcheck_cli.judge.fixes import Fix, FixContext, domain_op
from gradcheck_cli.judge.fixes_safe_code import alternatives, placeholder_call, rewrite_call

# The eps of a safe op, by dtype: 1/eps must stay finite (float16 holds up to 65504), and 1 - eps must differ
# from 1 for acos and asin (float16 keeps 11 bits, so 1 - 1e-3 holds; bfloat16 keeps 8, so 1 - 1e-2).
SAFE_OP_EPS = {"float16": 1e-3, "bfloat16": 1e-2}
SAFE_OP_DEFAULT_EPS = 1e-6
# exp clamped below the largest x whose exp is finite (88.7 in float32 and bfloat16, 709.8 in float64, 11.1
# in float16), with room left for a sum of such values.
EXP_CLAMP = {"float16": 10.0, "float64": 700.0}
EXP_CLAMP_DEFAULT = 80.0

# Why each domain gives NaN/Inf.
_DOMAIN_WHY = {
    "log": "The logarithm is defined for x > 0: a negative x gives NaN and 0 gives -Inf",
    "log1p": "log1p(x), the logarithm of 1 + x, is defined for x > -1: below it gives NaN, and -1 gives -Inf",
    "sqrt": "The square root is defined for x >= 0, and its slope 1/(2 sqrt(x)) is infinite at 0",
    "rsqrt": "The reciprocal square root is defined for x > 0: 0 gives Inf and a negative x NaN",
    "division": "A division by 0 gives Inf (0/0 gives NaN), and one by a tiny divisor overflows",
    "pow": "A fractional power of a negative number is NaN, 0 to a negative power is Inf, and a power below 1 "
    "has an infinite slope at 0",
    "acos": "The arccosine is defined on [-1, 1], and its slope is infinite at -1 and 1",
    "asin": "The arcsine is defined on [-1, 1], and its slope is infinite at -1 and 1",
    "atanh": "The inverse hyperbolic tangent is defined on (-1, 1): -1 and 1 give Inf",
    "exp": "The exponential overflows to Inf above the log of the largest number the dtype holds",
}


def safe_op(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    op = domain_op(context.result)
    if op is None:
        return None
    eps = SAFE_OP_EPS.get(op.dtype, SAFE_OP_DEFAULT_EPS)
    limit = EXP_CLAMP.get(op.dtype, EXP_CLAMP_DEFAULT)
    bound = _number(limit) if op.domain == "exp" else _number(eps)
    rewritten = rewrite_call(op, bound)
    original, operand, safe = rewritten or placeholder_call(op, bound)
    at = op.location or "in the loss"
    if rewritten is not None:
        lines = [f"# {at} ({op.detail}):", safe]
    else:
        called = f", in {' '.join(op.source.split())}" if op.source else ""  # a call spread over lines, on one
        role = {"division": "the divisor", "pow": "the base"}.get(op.domain, f"the input of {op.name}")
        lines = [f"# {at}{called}: {op.detail}; {operand} stands for {role}:", f"{safe}  # instead of {original}"]
    lines += [f"# {line}" for line in alternatives(op, operand, bound)]
    lead = f"At {op.location}, " if op.location else "In the loss, "
    stage = ", in the backward pass" if op.singular else ""
    detail = (
        f"{lead}{op.detail} made the first NaN/Inf{stage}. {_DOMAIN_WHY[op.domain]}. {_remedy(op, eps, limit)}. "
        "The NaN comes from the values this op was given, not from the size of a step: clipping the gradient, "
        "the init or a lower learning rate does not remove it."
    )
    params: dict[str, Any] = {"op": op.name, "domain": op.domain}
    params.update({"max": limit} if op.domain == "exp" else {"eps": eps})
    if rewritten is not None:
        params["replaces"] = original  # the call as written at op.location, which the code's line replaces
    return Fix(FixId.SAFE_OP.value, _safe_title(op, bound), detail, "\n".join(lines), params)


def _safe_title(op: NonfiniteOp, bound: str) -> str:
    if op.domain in ("log", "sqrt", "rsqrt"):
        return f"Keep the input of {op.name} positive (clamp it at {bound})"
    if op.domain == "log1p":
        return f"Keep the input of {op.name} above -1 (clamp it at -1 + {bound})"
    if op.domain == "division":
        return f"Keep the divisor away from 0 (clamp it at {bound}, or -{bound} for a negative one)"
    if op.domain == "pow":
        return f"Keep the base of {op.name} positive (clamp it at {bound})"
    if op.domain == "exp":
        return f"Keep {op.name} from overflowing (clamp its input at {bound}, or use logsumexp / softmax)"
    return f"Keep the input of {op.name} inside (-1, 1) (clamp it to +-(1 - {bound}))"


def _remedy(op: NonfiniteOp, eps: float, limit: float) -> str:
    shown = _number(eps)
    if op.domain in ("log", "log1p"):
        return f"Clamped at eps = {shown}, the output stays finite and its slope below {1 / eps:.3g}"
    if op.domain in ("sqrt", "rsqrt"):
        slope = 0.5 / eps**0.5 if op.domain == "sqrt" else 0.5 / eps**1.5  # |d/dx| of x^(1/2), x^(-1/2) at eps
        return f"Clamped at eps = {shown}, the output and its slope stay finite (the slope below {slope:.3g})"
    if op.domain == "division":
        return f"A divisor kept at least eps = {shown} away from 0 bounds the quotient by |numerator| / {shown}"
    if op.domain == "pow":
        return f"Clamped at eps = {shown}, the base is positive: the power and its slope are finite"
    if op.domain == "exp":
        return f"Clamped at {_number(limit)}, the exponential stays below {math.exp(limit):.3g}"
    slope = 1 / math.sqrt(1 - (1 - eps) ** 2)
    return f"Clamped to +-(1 - {shown}), the output stays finite and its slope below {slope:.3g}"


def _number(value: float) -> str:
    """1e-06 as 1e-6, 80.0 as 80: a literal as one writes it."""
    text = f"{value:g}"
    return text.replace("e-0", "e-").replace("e+0", "e+")
