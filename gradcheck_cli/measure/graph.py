"""Reading what a model is built from: its module types, and the skip connections in the autograd graph
behind its loss (where two paths of different weighted depth merge)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradcheck_cli.common.stats import ModelStructure
from gradcheck_cli.measure.layer_types import ACTIVATION_TYPES, ALL_NORM_TYPES

# Autograd nodes that add two tensors: a skip connection when the operands crossed different numbers
# of weighted operations (x + f(x)).
_ADD_NODES = ("AddBackward0", "AddBackward1")
_CAT_NODES = ("CatBackward0",)  # torch.cat: a skip when its operands crossed different numbers of weighted ops
_MERGE_NODES = frozenset({*_ADD_NODES, *_CAT_NODES})
_ACCUMULATE_GRAD = "torch::autograd::AccumulateGrad"  # the node of a leaf tensor: its .variable
ELEMENTWISE_NODES = frozenset({*_ADD_NODES, "SubBackward0", "MulBackward0", "DivBackward0"})
# Nodes that only reshape or cast what they are given: a weight seen through one is still a parameter.
VIEW_NODES = frozenset(
    f"{name}Backward0"
    for name in (
        "T", "View", "UnsafeView", "Reshape", "ReshapeAlias", "Expand", "Permute", "Transpose", "Unsqueeze",
        "Squeeze", "Slice", "Select", "ToCopy", "Clone", "AsStrided", "Split", "SplitWithSizes", "Unbind",
        "Alias", "Narrow",
    )
) | {"SqueezeBackward1", "SqueezeBackward2", "UnsqueezeBackward1"}  # fmt: skip


def describe_structure(model: nn.Module, residual: bool | None = None, skips: Skips | None = None) -> ModelStructure:
    """Read what the model is built from off its module types (cheap, no forward pass); ``skips``, read off
    the autograd graph, say whether and how often paths merge (``residual`` when they were not read)."""
    if skips is not None:
        residual = skips.merges > 0
    structure = ModelStructure(residual=residual)
    if skips is not None:
        structure.skip_merges, structure.concatenations = skips.merges, skips.concatenations
    for module in model.modules():
        kind = type(module).__name__
        if isinstance(module, ACTIVATION_TYPES):
            structure.activations[kind] = structure.activations.get(kind, 0) + 1
        elif isinstance(module, ALL_NORM_TYPES):
            structure.norms[kind] = structure.norms.get(kind, 0) + 1
        elif isinstance(module, nn.RNNBase):
            key = kind if not isinstance(module, nn.RNN) else f"RNN({module.nonlinearity})"
            structure.recurrent[key] = structure.recurrent.get(key, 0) + 1
        elif isinstance(module, nn.modules.conv._ConvNd):
            structure.convolutional = True
    return structure


def has_skip_connections(loss: torch.Tensor, nodes: list[Any]) -> bool:
    """Whether the autograd graph behind ``loss`` has a skip connection (see read_skips)."""
    return read_skips(loss, nodes).merges > 0


@dataclass(frozen=True)
class Skips:
    """The skip connections of one autograd graph: where two paths of different weighted depth merge."""

    additions: int = 0  # x + f(x): residual connections
    concatenations: int = 0  # torch.cat([x, f(x)]): DenseNet, Inception's branches, U-Net

    @property
    def merges(self) -> int:
        return self.additions + self.concatenations


def read_skips(loss: torch.Tensor, nodes: list[Any]) -> Skips:
    """The merges in the autograd graph behind ``loss`` of tensors that crossed different numbers of
    weighted operations, as x + f(x) and torch.cat([x, f(x)]) do: the mark of a skip connection, whatever
    the forward code, the module names or their nesting. Inception's branches of 1, 2 and 3 convolutions
    concatenated count as one merge, as a residual block's sum does: each merge is one block.
    ``nodes`` receives every node the walk reads, for release_nodes once the graph's roots are gone.
    """
    walk = walk_weighted_depths(loss, nodes)
    additions = len(walk.additions)
    return Skips(additions, len(walk.merges) - additions)


@dataclass
class WeightedDepths:
    """The autograd graph behind a loss, read by walk_weighted_depths."""

    # Per node: (fed only by parameters, as a weight through .t() or a view; such a node feeds a parameter of 2+
    # dims; depth in weighted operations).
    nodes: dict[Any, tuple[bool, bool, int]] = field(default_factory=dict)
    # Each addition or concatenation of operands of different depths: (its node, its name, its operand nodes).
    merges: list[tuple[Any, str, list[Any]]] = field(default_factory=list)

    @property
    def additions(self) -> list[tuple[Any, str, list[Any]]]:
        """The merges that are x + f(x), not torch.cat."""
        return [merge for merge in self.merges if merge[1] in _ADD_NODES]


def walk_weighted_depths(loss: torch.Tensor, nodes: list[Any]) -> WeightedDepths:
    """Every node behind ``loss`` with its depth in weighted operations, and the skip merges (read_skips).

    A weighted operation is a node fed (through views) by a parameter of 2 or more dimensions; a bias,
    a norm's scale or a positional table added directly are parameters, not operands, so they do not
    count, and two embeddings added together are the same depth. A merge with the raw input alone (depth
    0) is not a skip merge.
    ``nodes`` receives every node the walk reads, for release_nodes once the graph's roots are gone.
    """
    walk = WeightedDepths()
    root = loss.grad_fn
    if root is None:
        return walk
    nodes.append(root)
    # A deep model's graph has thousands of nodes: each is read once (its name, its children), and a node on the
    # stack carries them once they are read.
    seen = walk.nodes
    stack: list[tuple[Any, str, list[Any]] | tuple[Any, None, None]] = [(root, None, None)]
    while stack:
        node, name, children = stack.pop()
        if node in seen:
            continue
        if children is None:
            name = node.name()
            if name == _ACCUMULATE_GRAD:  # a leaf parameter
                seen[node] = (True, node.variable.dim() >= 2, 0)
                continue
            children = [child for child, _ in node.next_functions if child is not None]
            nodes.extend(children)
            stack.append((node, name, children))
            stack.extend((child, None, None) for child in children if child not in seen)
            continue
        fed = [seen[child] for child in children]
        operands = [depth for param_only, _, depth in fed if not param_only]
        param_only = bool(children) and not operands and name in VIEW_NODES
        weighted = param_only and any(w for _, w, _ in fed)
        # A parameter added or multiplied elementwise (a positional table, a scale) is not a weighted op.
        own = not param_only and name not in ELEMENTWISE_NODES and any(p and w for p, w, _ in fed)
        depth = max(operands, default=0) + (1 if own else 0)
        seen[node] = (param_only, weighted, depth)
        if len(operands) >= 2 and len(set(operands)) > 1 and min(operands) >= 1 and name in _MERGE_NODES:
            walk.merges.append((node, name, [child for child in children if not seen[child][0]]))
    return walk
