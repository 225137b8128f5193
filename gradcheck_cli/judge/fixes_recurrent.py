"""Fixes for recurrent models: a gated cell, the memory gate's bias (chrono init), orthogonal recurrent weights,
and residual connections between stacked recurrent layers."""

from __future__ import annotations

from typing import Any

from gradcheck_cli.common.choices import FixId
from gradcheck_cli.judge.fixes import Fix, FixContext, chrono_forget_bias, recurrent_trend


def lstm(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    if not evidence.get("type", "").startswith("RNN"):
        return None
    steps = evidence["time_steps"]
    bias = chrono_forget_bias(steps)
    return Fix(
        FixId.LSTM.value,
        "Use a gated recurrent cell (LSTM or GRU)",
        f"{evidence['module']} is a vanilla RNN; its gradient shrinks x{evidence['gain_per_step']:.3g} per step, "
        f"{evidence['decades']:+.1f} decades over {steps} steps (Bengio, Simard & Frasconi 1994). An LSTM's cell "
        f"state carries the gradient additively (Hochreiter & Schmidhuber 1997), but only with a forget-gate bias "
        f"well above 0: set it to ln(T-1) = {bias:.2f} for T = {steps} (chrono init, Tallec & Ollivier 2018).",
        "rnn = nn.LSTM(input_size, hidden_size, batch_first=True)\n" + _forget_bias_code("rnn", bias),
        {"forget_bias": round(bias, 3)},
    )


# The gate whose bias sets how much of the state survives a step, at rows [h:2h] in PyTorch's layout:
# LSTM gates are (input, forget, cell, output), GRU gates (reset, update, new); a GRU keeps its state
# where the update gate is near 1 (h_t = (1 - z) * n + z * h_(t-1)).
_MEMORY_GATE = {"LSTM": "forget", "GRU": "update"}


def forget_bias(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    gate = _MEMORY_GATE.get(evidence.get("type", ""))
    if gate is None:
        return None
    steps = evidence["time_steps"]
    bias = chrono_forget_bias(steps)
    kind = evidence["type"]
    return Fix(
        FixId.INIT.value,
        f"Set the {kind} {gate}-gate bias to {bias:.2f}",
        f"With its default bias near 0 the {gate} gate is about 0.5, so the state's gradient halves every step: "
        f"measured x{evidence['gain_per_step']:.3g} per step over {steps} steps (Jozefowicz et al. 2015). A bias "
        f"of ln(T-1) = {bias:.2f} makes the gate 1 - 1/T (chrono init, Tallec & Ollivier 2018).",
        _forget_bias_code(kind.lower(), bias, gate),
        {"scheme": "gate_bias", "gate": gate, "forget_bias": round(bias, 3)},
    )


def _forget_bias_code(name: str, bias: float, gate: str = "forget") -> str:
    """The two bias vectors add, so one carries the whole value and the other is zeroed."""
    return (
        f"h = {name}.hidden_size\n"
        f"for param_name, p in {name}.named_parameters():\n"
        f"    if param_name.startswith('bias_ih'):\n"
        f"        p.data[h:2 * h] = {bias:.2f}  # {gate} gate\n"
        f"    elif param_name.startswith('bias_hh'):\n"
        f"        p.data[h:2 * h] = 0.0"
    )


def recurrent_orthogonal(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    return Fix(
        FixId.INIT.value,
        "Initialize the recurrent weights orthogonally",
        f"The gradient grows x{evidence['gain_per_step']:.3g} per step in {evidence['module']}: the recurrent "
        "matrix has singular values above 1. An orthogonal matrix has all of them at 1 (Saxe et al. 2014).",
        "for name, p in rnn.named_parameters():\n    if name.startswith('weight_hh'):\n        nn.init.orthogonal_(p)",
        {"scheme": "orthogonal"},
    )


def recurrent_residual(context: FixContext, evidence: dict[str, Any]) -> Fix | None:
    kind = recurrent_trend(context)
    if kind is None or context.result.structure.residual:
        return None
    decades = evidence.get("decades")
    gain = evidence.get("gain_per_layer")
    measured = f" reaches the first at 10^{decades:+.1f} of the last" if decades is not None else " weakens"
    per_layer = f" (x{gain:.3g} per layer)" if gain else ""
    return Fix(
        FixId.RESIDUAL.value,
        "Add residual connections between the stacked recurrent layers",
        f"The gradient crosses {context.depth} {kind} layers in series and{measured}{per_layer}: each layer passes "
        "on only part of it to the layer below, through its gates and at every step. A residual connection around "
        "each layer after the first (x + layer(x)) gives it a path around every layer; GNMT's stacks train well "
        "with them where plain stacks train well to about 4 layers and poorly beyond 8 (Wu et al. 2016, "
        "section 3.1). nn.LSTM(num_layers=L) has none: build the stack from single layers.",
        "class ResidualStack(nn.Module):\n"
        "    def __init__(self, input_size, hidden_size, num_layers):\n"
        "        super().__init__()\n"
        "        self.layers = nn.ModuleList(\n"
        f"            nn.{kind}(input_size if i == 0 else hidden_size, hidden_size, batch_first=True)\n"
        "            for i in range(num_layers)\n"
        "        )\n"
        "    def forward(self, x):\n"
        "        for i, layer in enumerate(self.layers):\n"
        "            out, _ = layer(x)\n"
        "            x = out if i == 0 else x + out  # from the second layer on (Wu et al. 2016)\n"
        "        return x",
        {"scheme": "between_recurrent_layers"},
    )
