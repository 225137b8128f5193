"""Which module ends each residual branch, read off the autograd graph of one forward pass (issue 22).

Zeroing the weight of each residual branch's last norm (Goyal et al. 2017; torchvision's zero_init_residual), or
of its last layer where the branch has no norm after it (Fixup; Zhang, Dauphin & Ma 2019), starts every block
x + f(x) as the identity. Which module that is, is the forward code's business, not the module names': one forward
pass with hooks on the norms and on the layers with weights records which autograd node each one's output is. At
each x + f(x) merge (probe.walk_weighted_depths) the operand that crossed more weighted operations is the branch,
and the walk goes down it through ops with no parameters of their own (views, casts, dropout, a drop-path mask,
a gate's product) to the first hooked module's output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradcheck_cli.measure.graph import ELEMENTWISE_NODES, VIEW_NODES, WeightedDepths, walk_weighted_depths
from gradcheck_cli.measure.layer_types import ACTIVATION_TYPES, ALL_NORM_TYPES
from gradcheck_cli.measure.tensors import tensors_in
from gradcheck_cli.measure.torch_compat import clear_frames, direct_parameters, private_hooks_work, release_nodes

# Runs one forward pass of the model it is given and returns the loss (a tensor with a graph behind it).
ForwardLoss = Callable[[nn.Module], torch.Tensor]

# Ops a branch's last module output may pass through on its way to the merge while staying that module's output,
# up to a factor: views and casts, dropout (a mask product on the CPU, its own node on CUDA), a scalar or a mask
# multiplied or divided in (drop path), a bias or constant added. A zero there stays a zero at the merge.
_PASS_THROUGH = VIEW_NODES | ELEMENTWISE_NODES | {"NativeDropoutBackward0", "CloneBackward0"}


@dataclass
class BranchEnds:
    """The residual branches of a model and the modules that end them."""

    branches: int = 0  # x + f(x) merges
    concatenations: int = 0  # torch.cat merges of different depths: skips with no branch to zero
    # The module that ends one or more branches, each once, in the order the forward pass ran them, with the
    # number of branches it ends.
    ends: dict[nn.Module, int] = field(default_factory=dict)
    # Branches whose end cannot be found: the walk met an op that is no hooked module's output (an activation,
    # a functional convolution, a sum of two sub-branches) before any.
    unmatched: int = 0


def find_branch_ends(model: nn.Module, forward_loss: ForwardLoss) -> BranchEnds:
    """Run ``forward_loss(model)`` once with forward hooks on its norms and weighted layers, and find the module
    that ends each x + f(x) branch. Raises what ``forward_loss`` raises. The hooks are removed and the graph let
    go of (release_nodes) before returning; the caller keeps the model's modes and buffers."""
    nodes: list[Any] = []  # every autograd node read from Python, let go from the root end (release_nodes)
    handles: list[Any] = []
    try:
        return _read_branch_ends(model, forward_loss, nodes, handles)
    except BaseException as error:
        clear_frames(error)  # the failed pass's frames hold its graph, which must go before its nodes
        raise
    finally:
        for handle in handles:
            handle.remove()
        release_nodes(nodes)


def _read_branch_ends(model: nn.Module, forward_loss: ForwardLoss, nodes: list[Any], handles: list[Any]) -> BranchEnds:
    outputs: dict[Any, nn.Module] = {}  # a hooked module's output node -> the module
    order: dict[nn.Module, int] = {}  # the order the forward pass ran the hooked modules in

    def record(module: nn.Module, args: tuple, output: Any) -> None:
        order.setdefault(module, len(order))
        for tensor in tensors_in(output):
            node = tensor.grad_fn
            if node is not None:
                nodes.append(node)
                # The innermost module first: a wrapper returning its child's output ends where the child does.
                outputs.setdefault(node, module)

    handles.extend(m.register_forward_hook(record) for m in model.modules() if _may_end_a_branch(m))
    walk = walk_weighted_depths(forward_loss(model), nodes)  # (the loss, the graph's root, goes here)
    found = BranchEnds(len(walk.additions), len(walk.merges) - len(walk.additions))
    ends: dict[nn.Module, int] = {}
    for _, _, operands in walk.additions:
        branch = max(operands, key=lambda child: walk.nodes[child][2])  # the deeper operand: f(x)
        end = _end_of(branch, walk, outputs)
        if end is None:
            found.unmatched += 1
        else:
            ends[outputs[end]] = ends.get(outputs[end], 0) + 1
    found.ends = dict(sorted(ends.items(), key=lambda item: order[item[0]]))
    return found


def branch_weight(module: nn.Module) -> nn.Parameter | None:
    """The weight whose zero makes ``module``'s output (up to its bias) zero; None where it has none (a norm with
    affine=False, a layer without a weight)."""
    if isinstance(module, nn.MultiheadAttention):
        module = module.out_proj  # (its forward uses out_proj's weight without calling it as a module)
    weight = direct_parameters(module, private_hooks_work()).get("weight")
    return weight if isinstance(weight, nn.Parameter) else None


def _may_end_a_branch(module: nn.Module) -> bool:
    """Norms, attention, and layers with a weight of their own; not activations (a PReLU's zero slope is a ReLU)."""
    if isinstance(module, (*ALL_NORM_TYPES, nn.MultiheadAttention)):
        return True
    return "weight" in direct_parameters(module, private_hooks_work()) and not isinstance(module, ACTIVATION_TYPES)


def _end_of(node: Any, walk: WeightedDepths, outputs: dict[Any, nn.Module]) -> Any | None:
    """The hooked module output that ``node`` passes on (through _PASS_THROUGH ops), or None."""
    while node not in outputs:
        name = node.name()
        if name not in _PASS_THROUGH:
            return None
        slots = [child for child, _ in node.next_functions]
        if name == "DivBackward0":
            slots = slots[:1]  # (the numerator: a zero divisor is no zero branch)
        operands = [child for child in slots if child is not None and not walk.nodes[child][0]]
        if name == "MulBackward0" and len(operands) > 1:
            # a gate's product (squeeze-and-excitation): a zero factor zeroes it, so the first that ends at a module
            ends = (_end_of(child, walk, outputs) for child in operands)
            return next((end for end in ends if end is not None), None)
        if len(operands) != 1:  # a sum of two sub-branches, or only constants and parameters
            return None
        node = operands[0]
    return node
