"""The code of the safe_op fix: the user's own call, parsed (``ast``), with the operand that left the domain
clamped into it; placeholder names where the call is not at hand; and other safe forms, as comments."""

from __future__ import annotations

import ast

from gradcheck_cli.common.stats import NonfiniteOp

# The names a call of each domain's ops can have in the code (torch.log(x), x.log(), x.log_()).
_DOMAIN_CALLS = {
    "log": {"log", "log2", "log10"},
    "log1p": {"log1p"},
    "sqrt": {"sqrt"},
    "rsqrt": {"rsqrt"},
    "division": {"div", "divide", "true_divide", "floor_divide", "reciprocal"},
    "pow": {"pow", "float_power"},
    "acos": {"acos", "arccos"},
    "asin": {"asin", "arcsin"},
    "atanh": {"atanh", "arctanh"},
    "exp": {"exp", "expm1"},
}


def rewrite_call(op: NonfiniteOp, bound: str) -> tuple[str, str, str] | None:
    """(the op's call as written, its operand, the call with the operand kept in the domain), when the
    code that called it parses and holds a call of that op."""
    if not op.source or op.domain not in _DOMAIN_CALLS:
        return None
    tree = None
    for mode in ("eval", "exec"):  # the call itself (Python 3.11+), else the whole line
        try:
            tree = ast.parse(op.source, mode=mode)
            break
        except SyntaxError:
            continue
    if tree is None:
        return None
    for node in ast.walk(tree):  # outermost first
        operand = _domain_operand(node, op.domain)
        if operand is None or _is_number(operand):
            continue  # a number cannot be clamped: the code below says what to change
        start, end = _span(op.source, node), _span(op.source, operand)
        if start is None or end is None:
            return None
        text = op.source[end[0] : end[1]]
        receiver = _receiver(text, operand)
        arguments = [*node.args, *(k.value for k in node.keywords)] if isinstance(node, ast.Call) else []
        if operand not in arguments and op.source[end[0] - 1 : end[0]] == "(" and op.source[end[1] : end[1] + 1] == ")":
            end = (end[0] - 1, end[1] + 1)  # its own parentheses, as in (x - y) ** 0.5: replaced with it
            text = receiver = op.source[end[0] : end[1]]
        safe = _safe_operand(op, text, receiver, bound)
        return op.source[start[0] : start[1]], text, op.source[start[0] : end[0]] + safe + op.source[end[1] : start[1]]
    return None


def _domain_operand(node: ast.AST, domain: str) -> ast.expr | None:
    """In a call of an op of ``domain``, the operand that can leave it (a division's divisor, a power's base)."""
    if isinstance(node, ast.BinOp):
        if domain == "division" and isinstance(node.op, (ast.Div, ast.FloorDiv)):
            return node.right
        if domain == "pow" and isinstance(node.op, ast.Pow):
            return node.left
        return None
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    called = called.removesuffix("_")  # in place: x.log_()
    if called not in _DOMAIN_CALLS[domain]:
        return None
    method_of = func.value if isinstance(func, ast.Attribute) else None
    binary = domain in ("division", "pow") and called != "reciprocal"
    # torch.div(a, b) has both operands as arguments; a.div(b) has its first as the receiver.
    if len(node.args) >= (2 if binary else 1):
        return node.args[1] if domain == "division" and binary else node.args[0]
    if method_of is None:
        return None
    if domain == "division" and binary:
        return node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "other"), None)
    return method_of


def _is_number(node: ast.expr) -> bool:
    if isinstance(node, ast.UnaryOp):
        node = node.operand
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float))


def _span(source: str, node: ast.AST) -> tuple[int, int] | None:
    """A node's (start, end) in ``source`` as character offsets (ast counts UTF-8 bytes within a line)."""
    if getattr(node, "end_lineno", None) is None or getattr(node, "end_col_offset", None) is None:
        return None
    lines = source.splitlines(keepends=True)

    def offset(lineno: int, column: int) -> int:
        return sum(len(line) for line in lines[: lineno - 1]) + len(
            lines[lineno - 1].encode()[:column].decode(errors="ignore")
        )

    return offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset)


def _receiver(text: str, node: ast.expr | None) -> str:
    """``text`` as it can be written before ``.clamp_min(...)``: parenthesized unless it binds tighter."""
    if node is None or isinstance(node, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)):
        return text
    return f"({text})"


def _safe_operand(op: NonfiniteOp, text: str, receiver: str, bound: str) -> str:
    if op.domain == "log1p":
        return f"{receiver}.clamp_min(-1 + {bound})"
    if op.domain == "division":
        low, high = op.operand_range or (0.0, 0.0)
        if low >= 0:
            return f"{receiver}.clamp_min({bound})"
        if high <= 0:
            return f"{receiver}.clamp_max(-{bound})"
        return f"torch.where({receiver} >= 0, {receiver}.clamp_min({bound}), {receiver}.clamp_max(-{bound}))"
    if op.domain in ("acos", "asin", "atanh"):
        return f"{receiver}.clamp(-1 + {bound}, 1 - {bound})"
    if op.domain == "exp":
        return f"{receiver}.clamp_max({bound})"
    return f"{receiver}.clamp_min({bound})"  # log, sqrt, rsqrt, the base of pow


def placeholder_call(op: NonfiniteOp, bound: str) -> tuple[str, str, str]:
    """(call, operand, safe call) with placeholder names, where the calling code is not at hand (or not Python
    that parses on its own line: a call spread over lines, an op inside a built-in module)."""
    if op.domain == "division":
        return "a / b", "b", f"a / {_safe_operand(op, 'b', 'b', bound)}"
    if op.domain == "pow":
        power = f"{op.exponent:g}" if op.exponent is not None else "p"
        return f"x ** {power}", "x", f"{_safe_operand(op, 'x', 'x', bound)} ** {power}"
    return f"{op.name}(x)", "x", f"{op.name}({_safe_operand(op, 'x', 'x', bound)})"


def alternatives(op: NonfiniteOp, operand: str, bound: str) -> list[str]:
    """Other safe forms, as comment lines: for a quantity positive by construction, a smooth one."""
    receiver = operand if operand.isidentifier() or operand.endswith(")") else f"({operand})"
    if op.domain == "log":
        return [
            "a learned scale or variance? positive by construction:",
            f"{op.name}(torch.nn.functional.softplus({operand}) + {bound})",
        ]
    if op.domain == "sqrt":
        return [f"{operand} >= 0 by construction (a squared norm)? {op.name}({operand} + {bound}) is smooth"]
    if op.domain == "division":
        return [f"a divisor >= 0 by construction (a count, a norm)? ({operand} + {bound}) works too"]
    if op.domain == "pow":
        power = f"{op.exponent:g}" if op.exponent is not None else "p"
        return [f"to keep the sign: torch.sign({operand}) * {receiver}.abs().clamp_min({bound}) ** {power}"]
    if op.domain == "exp":
        return ["log(exp(x).sum(dim)) -> torch.logsumexp(x, dim)", "exp(x) / exp(x).sum(dim) -> torch.softmax(x, dim)"]
    return []
