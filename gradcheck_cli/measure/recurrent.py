"""Stacked recurrent modules measured layer by layer (issue 22).

``nn.LSTM/GRU/RNN(num_layers=L)`` is L recurrent layers in series in one module. Measured whole, it is one
row of the report, and the gradient it loses through its depth reads as part of one per-step profile at its
input, where depth and time are confounded: the gradient reaching the last step's input has crossed the L
layers straight down, while an early step's collects many paths through time and depth, so an LSTM stack that
vanishes through depth reads as exploding through time (shared/GRADIENTS.md, "Stacked recurrent layers hide
depth"). During a probe such a module runs as L single-layer modules of its class that hold its own parameters
(the same Parameter objects: nothing is copied or re-initialized), so that each layer is a row of its own
(``rnn.l0``, ``rnn.l1``, ...) with its backward and forward figures, and the depth trend runs across them.

A layer's gradient through time is measured as if the layer were the whole module: the gradient the stack's
output (and final state) receives from the loss, followed back through this layer's steps alone to each step's
input. For the top layer that is its own input gradient, as a single-layer module is measured; a lower layer's own
input gradient would carry every layer above it (the confounding above). A second run of each layer, on a detached
copy of its input and with detached parameters, receives that gradient and nothing else (``_OutputGradientTap``);
the real run's figures and the parameters' gradients are those of the model's own backward pass. The reruns cost
the stack's forward and backward again, so they are done on the probe's first pass only (a third more work for a
stack over three passes, where every pass would take two thirds more).

Modules that are not plain ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` (a subclass may change the forward), whose
weights are not plain parameters (parametrized, weight-normed), whose ``forward`` is already replaced on the
instance, or that a scan spreads over processes run whole, as before. The model is left as found: its modules'
``forward`` is restored when the probe ends and its parameters are only read.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from gradcheck_cli.measure.torch_compat import (
    NO_FORWARD,
    direct_parameters,
    instance_forward,
    restore_instance_forward,
    set_instance_forward,
)

# (layer name, the tensor whose gradient is dL/dx_t per step, its time dimension): the probe reduces it per step
TimeProbeFn = Callable[[str, torch.Tensor, int], None]

_STACKABLE = (nn.LSTM, nn.GRU, nn.RNN)
# A single layer's weights are a slice of the stacked module's flat weight buffer on CUDA; cuDNN may say they are
# not one chunk of their own. They are not meant to be: the stacked module keeps its buffer.
_NOT_CONTIGUOUS = "RNN module weights are not part of single contiguous chunk of memory"


def stacked(module: nn.Module, fast: bool = True) -> bool:
    """Whether ``module`` is a stacked recurrent module the probe can run layer by layer (``fast``: the hooks'
    path, torch_compat)."""
    if type(module) not in _STACKABLE or module.num_layers < 2 or instance_forward(module) is not NO_FORWARD:
        return False
    names = [
        name.replace("_l0", f"_l{k}") for k in range(module.num_layers) for name in _single_layer_weight_names(module)
    ]
    own = direct_parameters(module, fast)
    return all(isinstance(own.get(name), nn.Parameter) for name in names)


def stacked_modules(modules: list[tuple[str, nn.Module]], fast: bool = True) -> list[tuple[str, nn.RNNBase]]:
    """The (name, module) pairs of ``modules`` (named_modules()) that are stacked recurrent modules."""
    return [(name, module) for name, module in modules if stacked(module, fast)]


def layer_names(name: str, module: nn.RNNBase) -> list[str]:
    """The report's names of a stacked module's layers: ``rnn.l0``, ``rnn.l1``, ... (``l0``, ... for the root)."""
    return [f"{name}.l{k}" if name else f"l{k}" for k in range(module.num_layers)]


class StackedLayers:
    """Stacked recurrent modules (see stacked_modules) and their single-layer equivalents, for one probe."""

    def __init__(self, modules: list[tuple[str, nn.RNNBase]]) -> None:
        # stacked module -> its layers as (name, single-layer module sharing its parameters)
        self.layers_of: dict[nn.Module, list[tuple[str, nn.RNNBase]]] = {}
        # layer name -> (the single-layer module, the stacked module's name: "(model)" for the root)
        self._by_name: dict[str, tuple[nn.RNNBase, str]] = {}
        for name, module in modules:
            layers = list(zip(layer_names(name, module), _single_layers(module)))
            self.layers_of[module] = layers
            self._by_name.update((layer_name, (layer, name or "(model)")) for layer_name, layer in layers)

    def __contains__(self, module: nn.Module) -> bool:
        return module in self.layers_of

    def replace(self, layers: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
        """``layers`` (modules that own parameters) with each stacked module replaced by its layers, in order."""
        if not self.layers_of:
            return layers
        return [entry for name, module in layers for entry in self.layers_of.get(module, [(name, module)])]

    def layer(self, name: str) -> tuple[nn.RNNBase, str] | None:
        """(the single-layer module, the stacked module's name) of a layer name, or None."""
        return self._by_name.get(name)

    @contextmanager
    def layer_by_layer(self, time_probe: TimeProbeFn, measure_time: Callable[[], bool]) -> Iterator[None]:
        """While inside, each stacked module's forward runs its layers one after another (where ``measure_time()``
        says so, ``time_probe`` is given each layer's per-step probe); on the way out its own forward is back."""
        installed = []
        try:
            for module, layers in self.layers_of.items():
                set_instance_forward(module, _layered_forward(module, layers, time_probe, measure_time))
                installed.append(module)
            yield
        finally:
            for module in installed:
                restore_instance_forward(module, NO_FORWARD)


@functools.cache
def _layer_class(cls: type[nn.RNNBase]) -> type[nn.RNNBase]:
    """``cls`` without flatten_parameters, named as ``cls`` so that the report shows the layer's own type. On CUDA,
    flatten_parameters copies a module's weights into one new buffer and points the parameters at it: done to a
    layer, whose parameters are the user's, it would move them out of the stacked module's buffer."""

    def flatten_parameters(self: nn.RNNBase) -> None:
        return None

    return type(cls.__name__, (cls,), {"flatten_parameters": flatten_parameters, "__module__": __name__})


def _single_layer_weight_names(module: nn.RNNBase) -> list[str]:
    """The parameter names of layer 0 in PyTorch's layout: weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0,
    weight_hr_l0 (LSTM with proj_size), and each again with ``_reverse`` when bidirectional."""
    names = ["weight_ih_l0", "weight_hh_l0"]
    if module.bias:
        names += ["bias_ih_l0", "bias_hh_l0"]
    if getattr(module, "proj_size", 0):
        names.append("weight_hr_l0")
    return names + ([f"{name}_reverse" for name in names] if module.bidirectional else [])


def _single_layers(module: nn.RNNBase, frozen: bool = False) -> list[nn.RNNBase]:
    """One single-layer module of the module's class per layer, holding that layer's parameters: the module's own
    Parameter objects, or (``frozen``) parameters that share their storage and take no gradient."""
    cls = _layer_class(type(module))
    options: dict[str, Any] = {"bias": module.bias, "batch_first": module.batch_first}
    options["bidirectional"] = module.bidirectional
    if isinstance(module, nn.LSTM):
        options["proj_size"] = module.proj_size
    if isinstance(module, nn.RNN):
        options["nonlinearity"] = module.nonlinearity
    width = (getattr(module, "proj_size", 0) or module.hidden_size) * (2 if module.bidirectional else 1)
    layers = []
    for k in range(module.num_layers):
        # built on the meta device: no memory and no draw from the RNG for weights that are replaced at once
        layer = cls(module.input_size if k == 0 else width, module.hidden_size, 1, device="meta", **options)
        for name in _single_layer_weight_names(module):
            param = getattr(module, name.replace("_l0", f"_l{k}"))
            setattr(layer, name, nn.Parameter(param.detach(), requires_grad=False) if frozen else param)
        layers.append(layer)
    return layers


def _layered_forward(
    module: nn.RNNBase, layers: list[tuple[str, nn.RNNBase]], time_probe: TimeProbeFn, measure_time: Callable[[], bool]
) -> Callable:
    """The module's forward, computed layer by layer as PyTorch's fused kernel does: each layer's output is the
    next one's input, with dropout between layers in training mode, and the final states joined in layer order."""
    reruns = _single_layers(module, frozen=True)  # the layers again, for the gradient through time only
    directions = 2 if module.bidirectional else 1
    lstm = isinstance(module, nn.LSTM)

    def forward(input: Any, hx: Any = None) -> tuple[Any, Any]:
        states = _split_state(hx, len(layers), directions, lstm)
        x, finals, reran = input, [], []
        timed = measure_time() and isinstance(input, torch.Tensor) and input.is_floating_point()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_NOT_CONTIGUOUS)
            for k, ((name, layer), rerun) in enumerate(zip(layers, reruns)):
                if k and module.dropout and module.training:
                    x = _dropout(x, module.dropout)
                layer.training = rerun.training = module.training
                output, final = layer(x, states[k])
                if timed and output.requires_grad:
                    # (a PackedSequence has no step axis of its own: not timed, as a single module's is not)
                    probe = torch.zeros_like(x, requires_grad=True)
                    reran.append(rerun(x.detach() + probe, _detached(states[k])))
                    time_probe(name, probe, 1 if module.batch_first and x.dim() == 3 else 0)
                finals.append(final)
                x = output
        if reran:
            x, finals[-1] = _tapped(x, finals[-1], reran)
        return x, _join_states(finals, lstm)

    return forward


def _tapped(output: torch.Tensor, final: Any, reran: list[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, Any]:
    """The top layer's output and final state, unchanged, tapped: the gradients they get from the loss reach each
    rerun's output and final state too (all layers' have the same shapes), and so each rerun's input probe."""
    real = [output, *_leaves(final)]
    tapped = _OutputGradientTap.apply(len(real), *real, *(t for out, fin in reran for t in (out, *_leaves(fin))))
    output, *state = tapped
    return output, tuple(state) if isinstance(final, tuple) else state[0]


class _OutputGradientTap(torch.autograd.Function):
    """The identity on the first ``count`` tensors (the stack's output and final state); in the backward pass their
    gradients are also the gradients of each further group of ``count`` (a rerun's). Nothing else changes: the real
    gradients are passed on as they came, and the reruns' graphs reach no parameter and no earlier layer."""

    @staticmethod
    def forward(ctx: Any, count: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.copies = len(tensors) // count
        return tuple(t.view_as(t) for t in tensors[:count])

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (None, *grads * ctx.copies)


def _leaves(state: Any) -> list[torch.Tensor]:
    return list(state) if isinstance(state, tuple) else [state]


def _split_state(hx: Any, num_layers: int, directions: int, lstm: bool) -> list[Any]:
    """The initial state of each layer: rows [k * directions, (k + 1) * directions) of h_0 (and c_0)."""
    if hx is None:
        return [None] * num_layers
    rows = [slice(k * directions, (k + 1) * directions) for k in range(num_layers)]
    if lstm:
        h, c = hx
        return [(h[r], c[r]) for r in rows]
    return [hx[r] for r in rows]


def _join_states(finals: list[Any], lstm: bool) -> Any:
    if lstm:
        return torch.cat([h for h, _ in finals]), torch.cat([c for _, c in finals])
    return torch.cat(finals)


def _detached(state: Any) -> Any:
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def _dropout(x: Any, p: float) -> Any:
    if isinstance(x, PackedSequence):
        return x._replace(data=nn.functional.dropout(x.data, p, training=True))
    return nn.functional.dropout(x, p, training=True)
