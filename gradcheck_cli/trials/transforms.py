"""Apply a catalog fix to a copy of a user's model, so ``gradcheck --verify`` can measure the fixed model.

Only what can be done without touching the model's forward code is done here: modules are swapped,
weights re-drawn or zeroed, and layers inserted or wrapped inside ``nn.Sequential`` containers (whose forward
runs its children in order). Anything else raises ``FixNotApplicable`` with a sentence saying what to do by hand.

Nothing here seeds: the caller seeds the global RNG, and every draw walks the modules in registration
order, so the same seed gives the same copy.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from gradcheck_cli.common.errors import describe_exception
from gradcheck_cli.examine.copies import deepcopy_model
from gradcheck_cli.judge.fixes import SATURATING
from gradcheck_cli.measure.layer_types import ACTIVATION_TYPES, ALL_NORM_TYPES
from gradcheck_cli.measure.torch_compat import child_registry
from gradcheck_cli.trials.residual_branches import BranchEnds, ForwardLoss, branch_weight, find_branch_ends


class FixNotApplicable(Exception):
    """The fix cannot be applied to this model mechanically; str(error) is one sentence saying why and
    what to do by hand."""


class Residual(nn.Module):
    """``x + body(x)``: an identity path around ``body`` for the gradient (He et al. 2016)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


SATURATING_TYPES = tuple(getattr(nn, name) for name in SATURATING)
WEIGHTED_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORM_FOR_CONV = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}
# Modules that return a tensor of their input's shape, so a residual group may run through them;
# anything else (pooling, Flatten, a custom block) ends the group and stays outside the skip.
_SHAPE_KEEPING = (
    *ACTIVATION_TYPES, *ALL_NORM_TYPES, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)  # fmt: skip
# PyTorch's gate layout: LSTM rows are (input, forget, cell, output), GRU rows (reset, update, new); the
# gate that keeps the state is rows [h:2h] in both (fixes_recurrent._MEMORY_GATE has the same pairing).
_MEMORY_GATE = {"forget": nn.LSTM, "update": nn.GRU}


def apply_fix_to_copy(
    model: nn.Module, fix_id: str, params: dict[str, Any] | None, forward_loss: ForwardLoss | None = None
) -> tuple[nn.Module, str]:
    """A deep copy of ``model`` with the fix applied, and what changed, e.g.
    "50 Sigmoid -> ReLU; 51 Linear re-initialized (He normal, std sqrt(2/fan_in))". The original is never touched.
    ``forward_loss(copy)`` runs one forward pass and returns the loss: the zero_residual init reads off its
    autograd graph which module ends each residual branch (residual_branches.py).

    Raises ``FixNotApplicable`` where the model does not allow it, ``ValueError`` for ``clipping`` (it changes
    the training step, not the model), an unknown id or missing params (or forward_loss).
    """
    fix_id = getattr(fix_id, "value", fix_id)  # a FixId member hashes by its name, not its value
    transform = _TRANSFORMS.get(fix_id)
    if fix_id == "clipping":
        raise ValueError("clipping changes the training step, not the model: the caller applies it")
    if transform is None:
        raise ValueError(f"no model transform for fix {fix_id!r}; the transforms are {', '.join(_TRANSFORMS)}")
    if fix_id == "residual" and (params or {}).get("scheme") == "between_recurrent_layers":
        raise FixNotApplicable(
            "the stacked layers are one recurrent module (num_layers > 1), whose forward has no place for a skip; "
            "split it into one-layer modules added to their inputs, as in the code below."
        )
    # (the one transform that must see the model run: no module type or name says where a branch ends)
    zero_residual = fix_id == "init" and (params or {}).get("scheme") == "zero_residual"
    if zero_residual and forward_loss is None:
        raise ValueError("the init/zero_residual fix needs forward_loss, a forward pass to find the branches in")
    try:
        fixed = deepcopy_model(model)
    except Exception as error:  # deepcopy raises whatever the model's attributes raise
        raise FixNotApplicable(
            f"the model cannot be copied (deepcopy failed: {error}), so the fix cannot be tried on it; "
            "apply the code below by hand."
        ) from error
    if zero_residual:
        return _zero_residual_branches(fixed, forward_loss)
    return transform(fixed, params or {})


# --- the transforms: each gets the copy and the fix's params, and returns the (new) root and what changed


def _swap_saturating_for_relu(model: nn.Module, params: dict[str, Any]) -> tuple[nn.Module, str]:
    activation = params.get("activation", "ReLU")
    if activation != "ReLU":
        raise ValueError(f"the relu fix swaps activations for ReLU only, not {activation!r}")
    model, swapped = _swap_modules(
        model, lambda m: isinstance(m, SATURATING_TYPES), lambda old: nn.ReLU().train(old.training)
    )
    if not swapped:
        raise FixNotApplicable(
            "its activations are not modules (e.g. torch.sigmoid called in forward), so they cannot be swapped; "
            "change them in the code as below."
        )
    # He et al. 2015: ReLU halves the signal's second moment, so unit gain needs std sqrt(2/fan_in).
    redrawn, skipped = _redraw_weights(model, math.sqrt(2.0))
    parts = [f"{_counts(swapped)} -> ReLU"]
    if redrawn:
        parts.append(f"{_counts(redrawn)} re-initialized (He normal, std sqrt(2/fan_in))")
    return model, "; ".join(parts + _skipped_note(skipped))


def _reinitialize(model: nn.Module, params: dict[str, Any]) -> tuple[nn.Module, str]:
    scheme = _required(params, "scheme", "init")
    if scheme == "scale":
        return _rescale_weights(model, params)
    if scheme == "gate_bias":
        return _set_memory_gate_bias(model, params)
    if scheme == "orthogonal":
        return _orthogonalize_recurrent(model)
    raise ValueError(f"unknown init scheme {scheme!r}; expected scale, gate_bias, orthogonal or zero_residual")


def _rescale_weights(model: nn.Module, params: dict[str, Any]) -> tuple[nn.Module, str]:
    target = float(_required(params, "target", "init/scale"))
    redrawn, skipped = _redraw_weights(model, target)
    if not redrawn:
        raise FixNotApplicable(
            "it has no nn.Linear or nn.Conv1d/2d/3d layer whose weights can be re-drawn, so the scale cannot be "
            "set mechanically; re-initialize its weights as below."
        )
    note = f"{_counts(redrawn)} re-initialized (normal, std {target:.4g}/sqrt(fan_in)), biases zeroed"
    return model, "; ".join([note, *_skipped_note(skipped)])


def _set_memory_gate_bias(model: nn.Module, params: dict[str, Any]) -> tuple[nn.Module, str]:
    value = float(_required(params, "forget_bias", "init/gate_bias"))
    gate = params.get("gate")
    if gate is not None and gate not in _MEMORY_GATE:
        raise ValueError(f"unknown gate {gate!r}; expected forget (LSTM) or update (GRU)")
    # No gate named: set the state-keeping gate of both kinds of cell.
    kinds = {gate: _MEMORY_GATE[gate]} if gate else _MEMORY_GATE
    cells = [m for m in model.modules() if isinstance(m, tuple(kinds.values()))]
    names = " or ".join(f"nn.{cls.__name__}" for cls in kinds.values())
    if not cells:
        raise FixNotApplicable(
            f"it has no {names} module, so there is no gate bias to set; set it in the code as below."
        )
    with_bias = [cell for cell in cells if cell.bias]
    if not with_bias:
        raise FixNotApplicable(
            f"its {names} modules have bias=False, so there is no gate bias to set; enable the bias and set it as below."
        )
    changed: Counter[str] = Counter()
    for cell in with_bias:
        set_memory_gate_bias(cell, value)
        gate_name = "forget" if isinstance(cell, nn.LSTM) else "update"
        changed[f"{type(cell).__name__} {gate_name}-gate bias set to {value:.3g}"] += 1
    for cell in cells:
        if not cell.bias:
            changed[f"{type(cell).__name__} without bias left as it was"] += 1
    return model, _counts(changed, sep="; ")


def _orthogonalize_recurrent(model: nn.Module) -> tuple[nn.Module, str]:
    cells = [m for m in model.modules() if isinstance(m, (nn.RNN, nn.LSTM, nn.GRU))]
    if not cells:
        raise FixNotApplicable(
            "it has no nn.RNN, nn.LSTM or nn.GRU module, so there are no recurrent weights to re-initialize; "
            "initialize them in the code as below."
        )
    changed: Counter[str] = Counter()
    with torch.no_grad():
        for cell in cells:
            gates = cell.weight_hh_l0.shape[0] // cell.hidden_size
            for name, weight in cell.named_parameters():
                if name.startswith("weight_hh"):
                    _orthogonal_blocks(weight, cell.hidden_size)
            blocks = f", each of {gates} gate blocks" if gates > 1 else ""
            changed[f"{type(cell).__name__} weight_hh re-initialized (orthogonal{blocks})"] += 1
    return model, _counts(changed, sep="; ")


def _zero_residual_branches(model: nn.Module, forward_loss: ForwardLoss) -> tuple[nn.Module, str]:
    """Zero the weight that ends each residual branch, so that every block x + f(x) starts as the identity."""
    modes = [(module, module.training) for module in model.modules()]
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    model.train()  # the graph the probe measures: dropout and drop path as in training
    try:
        found = find_branch_ends(model, forward_loss)
    except Exception as error:  # the user's forward or loss
        raise FixNotApplicable(
            f"the forward pass that finds its residual branches failed ({describe_exception(error)}); zero the "
            "last norm of each branch in the code as below."
        ) from error
    finally:
        for module, training in modes:
            module.training = training
        with torch.no_grad():  # the pass moved the norms' running statistics
            for buffer, saved in buffers:
                buffer.copy_(saved)
    if not found.branches:
        if found.concatenations:
            raise FixNotApplicable(
                "its skip connections concatenate (torch.cat([x, f(x)])) rather than add, so there is no residual "
                "branch that a zero would start as the identity; this fix does not apply to it."
            )
        raise FixNotApplicable(
            "its autograd graph adds no x + f(x) (two paths through different numbers of layers), so there is no "
            "residual branch to start at zero; this fix does not apply to it."
        )
    zeroed: list[nn.Module] = []
    weightless: list[nn.Module] = []
    with torch.no_grad():
        for module in found.ends:
            weight = branch_weight(module)
            if weight is None:
                weightless.append(module)
            else:
                nn.init.zeros_(weight)
                zeroed.append(module)
    if not zeroed:
        raise FixNotApplicable(_no_branch_end_zeroed(found, weightless))
    kinds = " or ".join(sorted({"norm" if isinstance(m, ALL_NORM_TYPES) else "layer" for m in zeroed}))
    names = {id(module): name or "(model)" for name, module in model.named_modules()}
    shown = [names[id(module)] for module in zeroed]
    shown = shown if len(shown) <= 3 else [*shown[:2], "...", shown[-1]]
    branches = sum(found.ends[module] for module in zeroed)
    parts = [f"zeroed the last {kinds} of {branches} residual branches ({_types(zeroed)}: {', '.join(shown)})"]
    if weightless:
        more = sum(found.ends[module] for module in weightless)
        parts.append(f"{more} more end in a norm or layer without a weight ({_types(weightless)}), left as they were")
    if found.unmatched:
        parts.append(f"{found.unmatched} more end in an op that is no norm or layer module, left as they were")
    return model, "; ".join(parts)


def _no_branch_end_zeroed(found: BranchEnds, weightless: list[nn.Module]) -> str:
    """Why no branch of a model with x + f(x) merges got a zero: one sentence with what to do by hand."""
    if weightless:
        return (
            f"its residual branches end in a norm or layer without a weight to zero ({_types(weightless)}: "
            "affine=False, or no weight of its own); make the norm affine and zero its weight in the code as below."
        )
    return (
        f"its {found.branches} residual branches end in an op that is no norm or layer module (an activation, or a "
        "function called in forward), so gradcheck cannot tell which weight to zero; zero it in the code as below."
    )


def _types(modules: list[nn.Module]) -> str:
    """'16 BatchNorm2d, 1 Conv2d'."""
    return _counts(Counter(type(module).__name__ for module in modules))


def _insert_normalization(model: nn.Module, params: dict[str, Any]) -> tuple[nn.Module, str]:
    norm = params.get("norm", "batch")
    if norm not in ("batch", "layer"):
        raise ValueError(f"unknown norm {norm!r}; expected batch or layer")
    head = _head(model)
    inserted: Counter[str] = Counter()
    eligible = 0
    for seq in _plain_sequentials(model):
        entries = _entries(seq)
        rebuilt: list[tuple[str, nn.Module]] = []
        taken = {name for name, _ in entries}  # kept up to date: a deep Sequential gets a norm per layer
        for index, (name, module) in enumerate(entries):
            rebuilt.append((name, module))
            last = index == len(entries) - 1
            if not isinstance(module, WEIGHTED_TYPES) or (module is head and last):
                continue
            eligible += 1
            if not last and isinstance(entries[index + 1][1], ALL_NORM_TYPES):
                continue
            new = _norm_after(module, norm)
            fresh = _fresh_name(f"{name}_norm", taken)
            taken.add(fresh)
            rebuilt.append((fresh, new))
            inserted[f"{type(new).__name__} inserted after {type(module).__name__} layers"] += 1
        if len(rebuilt) > len(entries):
            _refill(seq, rebuilt)
    if not eligible:
        raise FixNotApplicable(
            "its layers are not in an nn.Sequential, so normalization cannot be inserted without changing its "
            "forward code; add it as below."
        )
    if not inserted:
        raise FixNotApplicable(
            "every layer in its nn.Sequential containers is already followed by a normalization layer, so there is "
            "nothing to insert; add normalization elsewhere in the code as below."
        )
    return model, _counts(inserted, sep="; ")


def _wrap_residual_groups(model: nn.Module, params: dict[str, Any]) -> tuple[nn.Module, str]:
    head = _head(model)
    wrapped: Counter[str] = Counter()
    for seq in _plain_sequentials(model):
        entries = _entries(seq)
        rebuilt: list[tuple[str, nn.Module]] = []
        changed = False
        for group in _groups(entries):
            layer = group[0][1]
            if isinstance(layer, WEIGHTED_TYPES) and layer is not head and _keeps_shape(layer):
                # Nothing is zero-initialized: the probe measures the model at initialization, and a zeroed
                # branch would make every block the identity, hiding the skip's effect on the gradient.
                residual = Residual(nn.Sequential(OrderedDict(group)))
                residual.training = residual.body.training = seq.training
                rebuilt.append((group[0][0], residual))
                wrapped[f"{type(layer).__name__} groups wrapped as x + body(x)"] += 1
                changed = True
            else:
                rebuilt.extend(group)
        if changed:
            _refill(seq, rebuilt)
    if sum(wrapped.values()) < 2:
        raise FixNotApplicable(
            "residual connections change the forward code, which gradcheck cannot rewrite outside an nn.Sequential "
            "of same-width layers; add them as below."
        )
    return model, _counts(wrapped, sep="; ")


def _rnn_to_lstm(model: nn.Module, params: dict[str, Any]) -> tuple[nn.Module, str]:
    forget_bias = float(_required(params, "forget_bias", "lstm"))
    without_bias = []

    def build(rnn: nn.RNN) -> nn.LSTM:
        weight = rnn.weight_ih_l0
        lstm = nn.LSTM(
            rnn.input_size, rnn.hidden_size, rnn.num_layers, bias=rnn.bias, batch_first=rnn.batch_first,
            dropout=rnn.dropout, bidirectional=rnn.bidirectional, device=weight.device, dtype=weight.dtype,
        )  # fmt: skip
        lstm.train(rnn.training)
        if lstm.bias:
            set_memory_gate_bias(lstm, forget_bias)
        else:
            without_bias.append(lstm)
        return lstm

    model, replaced = _swap_modules(model, lambda m: isinstance(m, nn.RNN), build)
    if not replaced:
        raise FixNotApplicable(
            "it has no nn.RNN module to replace, so an LSTM cannot be swapped in; change the recurrent layer in the "
            "code as below."
        )
    count = sum(replaced.values())
    state = "its hidden state is now a (h, c) tuple" if count == 1 else "their hidden states are now (h, c) tuples"
    parts = [f"{count} RNN -> LSTM (forget bias {forget_bias:.3g})", state]
    if without_bias:
        parts.append(f"{len(without_bias)} without bias, so no forget bias set")
    return model, "; ".join(parts)


_TRANSFORMS: dict[str, Callable[[nn.Module, dict[str, Any]], tuple[nn.Module, str]]] = {
    "relu": _swap_saturating_for_relu,
    "init": _reinitialize,
    "batchnorm": _insert_normalization,
    "residual": _wrap_residual_groups,
    "lstm": _rnn_to_lstm,
}


# --- helpers


def _required(params: dict[str, Any], key: str, fix: str) -> Any:
    if key not in params:
        raise ValueError(f"the {fix} fix needs params[{key!r}]")
    return params[key]


def _swap_modules(
    root: nn.Module, matches: Callable[[nn.Module], bool], build: Callable[[Any], nn.Module]
) -> tuple[nn.Module, Counter[str]]:
    """Replace every module ``matches`` accepts with ``build(old)`` wherever it is registered (attributes,
    Sequential, ModuleList, ModuleDict), and the root too. A module registered in several places gets one
    replacement, so shared modules stay shared. Returns the root and the replaced types counted."""
    # Keyed by id, holding the old module too so its id cannot be reused by a new object meanwhile.
    replacements: dict[int, tuple[nn.Module, nn.Module]] = {}
    visited: set[int] = set()

    def replacement(module: nn.Module) -> nn.Module:
        if id(module) not in replacements:
            replacements[id(module)] = (module, build(module))
        return replacements[id(module)][1]

    def visit(parent: nn.Module) -> None:
        if id(parent) in visited:
            return
        visited.add(id(parent))
        # The registry, not named_children(): that skips a module registered twice in the same parent.
        children = child_registry(parent)
        for name, child in list(children.items()):
            if child is None:
                continue
            if matches(child):
                children[name] = replacement(child)
            else:
                visit(child)

    if matches(root):
        root = replacement(root)
    else:
        visit(root)
    return root, Counter(type(old).__name__ for old, _ in replacements.values())


def _redraw_weights(model: nn.Module, scale: float) -> tuple[Counter[str], Counter[str]]:
    """Re-draw every Linear/ConvNd weight from N(0, (scale/sqrt(fan_in))^2) and zero its bias. Returns the
    layers re-drawn and those skipped: a lazy weight has no shape yet, and a parametrized one is computed
    from other tensors, so writing to it would change nothing."""
    redrawn: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, WEIGHTED_TYPES):
                continue
            weight = module.weight
            if not isinstance(weight, nn.Parameter) or nn.parameter.is_lazy(weight) or weight.numel() == 0:
                skipped[type(module).__name__] += 1
                continue
            fan_in = weight[0].numel()  # in_features, or in_channels/groups * kernel size
            weight.normal_(0.0, scale / math.sqrt(fan_in))
            if isinstance(module.bias, nn.Parameter):
                module.bias.zero_()
            redrawn[type(module).__name__] += 1
    return redrawn, skipped


def _skipped_note(skipped: Counter[str]) -> list[str]:
    return [f"{_counts(skipped)} left as they were (lazy or parametrized weight)"] if skipped else []


def set_memory_gate_bias(cell: nn.LSTM | nn.GRU, value: float) -> None:
    """Set the bias of the gate that keeps the state (rows [h:2h]: an LSTM's forget gate, a GRU's update
    gate) in every layer. The two bias vectors add, so bias_ih carries the whole value and bias_hh's rows
    are zeroed."""
    hidden = cell.hidden_size
    with torch.no_grad():
        for name, bias in cell.named_parameters():
            if name.startswith("bias_ih"):
                bias[hidden : 2 * hidden].fill_(value)
            elif name.startswith("bias_hh"):
                bias[hidden : 2 * hidden].zero_()


def _orthogonal_blocks(weight: torch.Tensor, hidden: int) -> None:
    """Each gate's block [k*h:(k+1)*h] gets its own orthogonal matrix (Saxe et al. 2014): the blocks act on
    the state separately, so one orthogonal matrix over the stack would leave each block's scale off 1."""
    # QR (inside orthogonal_) has no float16/bfloat16 kernel on CPU: draw in at least float32, then copy in.
    dtype = torch.promote_types(weight.dtype, torch.float32)
    for start in range(0, weight.shape[0], hidden):
        block = torch.empty(weight[start : start + hidden].shape, device=weight.device, dtype=dtype)
        nn.init.orthogonal_(block)
        weight[start : start + hidden].copy_(block)


def _head(model: nn.Module) -> nn.Module | None:
    """The last Linear/ConvNd registered: the output layer, left as it is by the normalization and residual fixes."""
    weighted = [m for m in model.modules() if isinstance(m, WEIGHTED_TYPES)]
    return weighted[-1] if weighted else None


def _plain_sequentials(model: nn.Module) -> list[nn.Sequential]:
    """The nn.Sequential containers whose forward is Sequential's own: only there is the order of the children
    the order of the computation. A subclass with its own forward may index its children by position."""
    return [m for m in model.modules() if isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward]


def _entries(seq: nn.Sequential) -> list[tuple[str, nn.Module]]:
    return [(name, module) for name, module in child_registry(seq).items() if module is not None]


def _refill(seq: nn.Sequential, entries: Iterable[tuple[str, nn.Module]]) -> None:
    """Change the Sequential in place (not a new one in its parent): the model's own references to it, the
    root among them, then see the change. The original children keep their names and new ones are named
    after them ("3_norm"), so the fixed model's layers can be matched to the measured ones by name."""
    for name in list(child_registry(seq)):
        delattr(seq, name)
    for name, module in entries:
        seq.add_module(name, module)


def _fresh_name(base: str, taken: set[str]) -> str:
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}{n}"
    return name


def _norm_after(layer: nn.Module, norm: str) -> nn.Module:
    """A norm for ``layer``'s output, on its device and dtype and in its train/eval mode."""
    factory = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    if isinstance(layer, nn.Linear):
        new = (nn.LayerNorm if norm == "layer" else nn.BatchNorm1d)(layer.out_features, **factory)
    else:
        # Convolutions keep BatchNorm: LayerNorm over (C, H, W) would need the map's size, unknown here.
        batchnorm = next(bn for conv, bn in _BATCHNORM_FOR_CONV.items() if isinstance(layer, conv))
        new = batchnorm(layer.out_channels, **factory)
    new.train(layer.training)
    return new


def _groups(entries: list[tuple[str, nn.Module]]) -> list[list[tuple[str, nn.Module]]]:
    """Split a Sequential's children into groups that each start at a weighted layer and run through the
    shape-keeping modules after it; every other child is a group of its own."""
    groups: list[list[tuple[str, nn.Module]]] = []
    for name, module in entries:
        # A group ends at the first child that is not shape-keeping: x + body(x) needs body's output shaped
        # like x, and a pooling layer or a custom block may not keep it.
        if groups and isinstance(groups[-1][0][1], WEIGHTED_TYPES) and isinstance(module, _SHAPE_KEEPING):
            groups[-1].append((name, module))
        else:
            groups.append([(name, module)])
    return groups


def _keeps_shape(layer: nn.Module) -> bool:
    """Whether the layer's output has its input's shape: Linear in == out, or a convolution with as many
    channels out as in, stride 1, and 'same' padding ((k-1)/2 * dilation per dim, odd k)."""
    if isinstance(layer, nn.Linear):
        return layer.in_features == layer.out_features
    if layer.in_channels != layer.out_channels or any(s != 1 for s in layer.stride):
        return False
    if layer.padding == "same":
        return True
    padding = (0,) * len(layer.kernel_size) if layer.padding == "valid" else layer.padding
    return all(k % 2 == 1 and p == (k - 1) // 2 * d for k, p, d in zip(layer.kernel_size, padding, layer.dilation))


def _counts(counts: Counter[str], sep: str = ", ") -> str:
    """'3 Conv2d, 1 Linear': how many of each, in the order first met."""
    return sep.join(f"{n} {kind}" for kind, n in counts.items())
