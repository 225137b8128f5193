"""Where gradcheck reaches into torch's private parts, or into what differs between torch versions: one place
to read when torch changes.

The probe's hooks have two paths. The fast one writes hooks straight into a module's hook dicts (with ids from
``RemovableHandle.next_id``), wraps a module's ``forward`` on the instance, reads the global forward-hook
registry and builds gradient edges without ``get_gradient_edge``'s checks: a microsecond or more saved per
layer and pass, which a deep narrow model feels. The public one uses only ``register_forward_hook``,
``register_forward_pre_hook``, their handles and ``torch.autograd.graph.get_gradient_edge``, and gives the same
figures. Whether the fast path works is checked once per process (``private_hooks_work``: the private
attributes exist and behave as the fast path expects, whatever the version says); where it does not, the
public path runs. ``public_hooks()``, or the environment variable ``GRADCHECK_PUBLIC_HOOKS=1``, forces the
public path (tests run both).

Two private reads have no public counterpart and serve both paths: a tensor's version counter
(``tensor_version``: whether an in-place op changed a kept tensor) and an autograd node's sequence number
(``release_nodes``).

torch is imported inside the functions, not at module level: importing this module stays torch-free.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import operator
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gradcheck_cli.common.errors import GradcheckError

if TYPE_CHECKING:
    import torch
    from torch import nn

# --- torch.compile -------------------------------------------------------------------------------------
# A model given as torch.compile(module) is measured through the module it wraps, eagerly (issue 23): the
# probe's hooks must not be traced by dynamo (a scan compiled 18 graphs), and layer names are the module's
# own, not prefixed with "_orig_mod.", so a report, a baseline and a --ignore glob line up with the
# uncompiled model's. Compiled code is not run, so the figures are those of the same model run eagerly.


@dataclass(frozen=True)
class EagerModel:
    """A model as gradcheck measures it: every torch.compile wrapper looked through (see ``eager_model``)."""

    model: nn.Module  # the original module, with the original of each compiled submodule in its place
    # What was compiled, as the report names it: "torch.compile(block)", "model.compile()" ("model": the root).
    compiled: tuple[str, ...] = ()
    # Compiled in place ("model.compile()") on a torch without the force_eager stance (< 2.6): run compiled.
    run_compiled: tuple[str, ...] = ()

    @property
    def note(self) -> str | None:
        """One line for the report's context, or None when nothing was compiled."""
        if not self.compiled and not self.run_compiled:
            return None
        parts = []
        if self.compiled:
            through = "its original module" if len(self.compiled) == 1 else "their original modules"
            parts.append(
                f"{_listed(self.compiled)}, measured through {through}: compiled code is not run, so the figures "
                "are eager-mode figures"
            )
        if self.run_compiled:
            parts.append(f"{_listed(self.run_compiled)} ran compiled: {FORCE_EAGER.missing()}")
        return "; ".join(parts)


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


_ACTIVE: ContextVar[EagerModel | None] = ContextVar("gradcheck_eager_model", default=None)


@contextlib.contextmanager
def eager_model(model: nn.Module) -> Iterator[EagerModel]:
    """``model`` with every ``torch.compile`` wrapper looked through, for as long as the block runs.

    A wrapper (``OptimizedModule``, what ``torch.compile(module)`` returns) is replaced by its ``_orig_mod``:
    the model itself, or a compiled submodule in its parent's registry for the duration (put back in
    ``finally``, so the model is left as found; its parameters are the wrapper's own). With torch 2.6+,
    compiled functions and ``module.compile()`` run eagerly meanwhile too (the ``force_eager`` stance).

    Entered again inside the block (a scan's own steps, the copies it measures), it looks through nothing
    twice: the same model gives the same view, and what was compiled is carried to the nested reports.
    """
    outer = _ACTIVE.get()
    if outer is not None and model is outer.model:
        yield outer
        return
    with contextlib.ExitStack() as stack:
        view = EagerModel(model, *((outer.compiled, outer.run_compiled) if outer is not None else ()))
        # torch.compile imports torch._dynamo: until it is imported, nothing can have been compiled.
        if "torch._dynamo" in sys.modules:
            eager = _enter_force_eager(stack)
            root, compiled, swaps = _look_through(model)
            in_place = [name for name in compiled if name.endswith(".compile()")]
            run_compiled = () if eager else tuple(name for name in in_place if name not in view.run_compiled)
            compiled = [name for name in compiled if eager or name not in in_place]
            stack.callback(_put_back, swaps)
            for modules, key, wrapper in swaps:
                # Written into the registry, not through setattr: a module's own __setattr__ may do more.
                modules[key] = _compiled_original(wrapper)
            view = EagerModel(
                root,
                view.compiled + tuple(name for name in compiled if name not in view.compiled),
                view.run_compiled + run_compiled,
            )
        stack.callback(_ACTIVE.reset, _ACTIVE.set(view))
        yield view


def _look_through(model: nn.Module) -> tuple[nn.Module, list[str], list[tuple[dict, str, Any]]]:
    """The module to measure, what was compiled, and where a compiled submodule's wrapper is to be replaced
    by its original: (a parent's module registry, the key)."""
    root = _compiled_original(model) or model
    compiled = [] if root is model else ["torch.compile(model)"]
    if _compiled_in_place(root):
        compiled.append("model.compile()")
    swaps = []
    pending, seen = [("", root)], {id(root)}
    while pending:  # a loop, not recursion: a model may be 40,000 modules deep (issue 21)
        prefix, module = pending.pop()
        children = []
        for key, child in module._modules.items():
            if child is None:
                continue
            original = _compiled_original(child)
            if original is not None:
                swaps.append((module._modules, key, child))
                compiled.append(f"torch.compile({prefix}{key})")
                child = original
            elif _compiled_in_place(child):
                compiled.append(f"{prefix}{key}.compile()")
            if id(child) not in seen:
                seen.add(id(child))
                children.append((f"{prefix}{key}.", child))
        pending.extend(reversed(children))  # in named_modules' order
    return root, compiled, swaps


def _put_back(swaps: list[tuple[dict, str, Any]]) -> None:
    for modules, key, wrapper in reversed(swaps):
        modules[key] = wrapper


def original_module(module: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper runs, or ``module`` itself: a compiled model and its original
    are one model, not two. To measure a model, use ``eager_model``."""
    return _compiled_original(module) or module


def _compiled_original(module: Any) -> nn.Module | None:
    """The module a ``torch.compile`` wrapper runs (through every layer of wrapping), or None for any other
    module. Read off ``sys.modules``: importing torch._dynamo to ask costs seconds."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    wrapper_class = getattr(eval_frame, "OptimizedModule", None)
    if wrapper_class is None or not isinstance(module, wrapper_class):
        return None
    while isinstance(module, wrapper_class):
        module = module._orig_mod
    return module


def _compiled_in_place(module: Any) -> bool:
    """``module.compile()`` (torch 2.2+) keeps the compiled call on the instance; ``__call__`` then runs it."""
    return vars(module).get("_compiled_call_impl") is not None


def _enter_force_eager(stack: contextlib.ExitStack) -> bool:
    """Run every torch.compile'd function eagerly until ``stack`` closes (torch 2.6+); whether it could."""
    import torch

    set_stance = getattr(getattr(torch, "compiler", None), "set_stance", None)
    if set_stance is None:
        return False
    try:
        stack.enter_context(set_stance("force_eager"))
    except RuntimeError:  # called from inside a compiled region, where the stance cannot change
        return False
    return True


def is_compiled_function(value: Any) -> bool:
    """Whether ``value`` is ``torch.compile(fn)`` of a plain function, which keeps ``fn`` on the wrapper."""
    return inspect.isfunction(value) and "_torchdynamo_orig_callable" in vars(value)


# --- torch versions --------------------------------------------------------------------------------------
# pyproject.toml's floor (torch>=2.4) is the oldest torch the test suite runs on in CI (`make test-floor`, issue
# 23). A feature that needs a newer torch is declared here, once: on an older torch it says so in one sentence
# with the way out, and its tests skip with the same words.


def torch_version() -> tuple[int, int]:
    """The (major, minor) release of the torch imported: (2, 4) for 2.4.1+cu121, (2, 6) for a 2.6 nightly."""
    import torch

    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)


@dataclass(frozen=True)
class TorchFeature:
    """A feature that needs a newer torch than the floor."""

    name: str  # the subject of the sentence: "--fsdp (FSDP2: ...)"
    minimum: tuple[int, int]

    def available(self) -> bool:
        return torch_version() >= self.minimum

    def missing(self) -> str:
        """Why the feature is unavailable here, the way a message and a test's skip reason say it."""
        import torch

        return f"{self.name} needs torch >= {self.minimum[0]}.{self.minimum[1]}; this is torch {torch.__version__}"

    def require(self, way_out: str, error: type[GradcheckError] = GradcheckError) -> None:
        """Raise ``error`` with the one sentence and ``way_out`` when this torch is older than the minimum."""
        if not self.available():
            raise error(f"{self.missing()}: {way_out}.")


# torch.distributed.fsdp.fully_shard is public from 2.6 (before, FSDP2 was torch.distributed._composable.fsdp).
FSDP2 = TorchFeature("--fsdp (FSDP2: torch.distributed.fsdp.fully_shard)", (2, 6))
# The check for code before an archive is loaded (loading._export_hazard) reads the .pt2 layout of torch 2.13,
# its opaque objects and payload configs (2.8 has neither, 2.9 to 2.12 no opaque objects); what an older
# torch.export.load unpickles is unchecked, and 2.4's torch.export.unflatten fails on an nn.Sequential.
EXPORT_ARCHIVE = TorchFeature("loading a torch.export archive", (2, 13))
# torch.compiler.set_stance("force_eager"), which runs model.compile() and compiled functions eagerly, is new in 2.6.
FORCE_EAGER = TorchFeature("running it eagerly", (2, 6))


# --- autograd graphs and frames: letting go of what Python has read, in an order that cannot overflow the stack


def release_nodes(nodes: list[Any]) -> None:
    """Let go of autograd nodes that Python has read, the latest made first; call it once the tensors at the root
    of their graph are gone, and hold every node read from Python (``tensor.grad_fn``, ``next_functions``,
    ``register_hook``, a GradientEdge) in ``nodes`` until then.

    torch frees a deep graph in a loop, not by recursion (pytorch#5534), but torch 2.13 frees a node that Python
    has read through the Python object it keeps for it from then on, outside that loop: freeing a chain of such
    nodes recurses a few C frames per node, and a 40,000-layer model overflowed the stack (a segfault, issue
    21). Held until the roots are gone and let go from the root end (a node is made after the nodes it reads
    from: its sequence number is higher), each one frees itself and the unread nodes below it, down to the next
    one still held.
    """
    nodes.sort(key=_SEQUENCE_NR)
    while nodes:
        nodes.pop()


_SEQUENCE_NR = operator.methodcaller("_sequence_nr")


def release_with_graph(root: torch.Tensor, nodes: list[Any]) -> None:
    """Hand ``nodes`` (see release_nodes) to the graph behind ``root``, for a graph that is not gradcheck's to
    drop (the monitor's: the user's training step). Kept in the metadata of its root node, they are let go in
    order when that node goes, once its own destructor has let go of the nodes below it. (The root node itself is
    left out: held by its own metadata, it would never go.)"""
    node = root.grad_fn
    node.metadata.setdefault("gradcheck_nodes", []).append(_NodeReleaser([n for n in nodes if n is not node]))


class _NodeReleaser:
    """Nodes held for release_nodes, let go when this is freed."""

    __slots__ = ("nodes",)

    def __init__(self, nodes: list[Any]) -> None:
        self.nodes = nodes

    def __del__(self) -> None:
        release_nodes(self.nodes)


def clear_frames(error: BaseException) -> None:
    """Drop the locals of the frames ``error`` and the exceptions behind it came through, below the one that
    caught it: they hold the failed pass's graph, which must go before the nodes read from it are let go
    (release_nodes). traceback.clear_frames leaves the copy of a frame's locals that reading f_locals made
    (_failing_layer reads them) until f_locals is read again, before Python 3.13."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        tb = cause.__traceback__
        tb = tb.tb_next if tb is not None else None  # (the catching frame is still running: its locals are its own)
        traceback.clear_frames(tb)
        while tb is not None:
            tb.tb_frame.f_locals  # noqa: B018 (emptied now)
            tb = tb.tb_next
        cause = cause.__cause__ or cause.__context__


def traceback_selves(error: BaseException) -> Iterator[Any]:
    """The ``self`` of each frame ``error`` came through, outermost first (None where a frame has none): which
    modules' forward was running when it was raised, read without a hook on the hot path."""
    tb = error.__traceback__
    while tb is not None:
        yield tb.tb_frame.f_locals.get("self")
        tb = tb.tb_next


# --- the probe's hooks: a fast path through private attributes, and a public one --------------------------


_FORCED_PUBLIC: ContextVar[bool] = ContextVar("gradcheck_public_hooks", default=False)
PUBLIC_HOOKS_VARIABLE = "GRADCHECK_PUBLIC_HOOKS"


@contextlib.contextmanager
def public_hooks() -> Iterator[None]:
    """Probes inside run on the public path, whatever this torch allows."""
    token = _FORCED_PUBLIC.set(True)
    try:
        yield
    finally:
        _FORCED_PUBLIC.reset(token)


def fast_hooks() -> bool:
    """Whether a probe starting now takes the fast path: not forced public, and the private attributes work."""
    if _FORCED_PUBLIC.get() or os.environ.get(PUBLIC_HOOKS_VARIABLE) == "1":
        return False
    return private_hooks_work()


@functools.cache
def private_hooks_work() -> bool:
    """Whether the fast path's private attributes exist and behave as it expects on this torch: checked on a
    module of gradcheck's own, once per process (it takes one id from RemovableHandle's counter)."""
    import torch
    from torch import nn
    from torch.autograd.graph import get_gradient_edge
    from torch.utils.hooks import RemovableHandle

    try:
        if not isinstance(_global_forward_hooks(), dict) or not isinstance(RemovableHandle.next_id, int):
            return False
        module, seen = nn.Identity(), []
        entry = add_hook_to_dict(module, lambda m, a, o: seen.append("hook"), pre=False)
        own = instance_forward(module)
        set_instance_forward(module, lambda x: seen.append("forward") or x)
        x = torch.ones(2, requires_grad=True)
        y = module(x * 2.0)
        restore_instance_forward(module, own)
        remove_hook_from_dict(entry)
        edge, reference = _fast_gradient_edge(y), get_gradient_edge(y)
        same_edge = edge.node is reference.node and edge.output_nr == reference.output_nr
        return seen == ["forward", "hook"] and not module._forward_hooks and same_edge and "forward" not in vars(module)
    except (AttributeError, TypeError, RuntimeError):
        return False


def _global_forward_hooks() -> Any:
    from torch import nn

    return nn.modules.module._global_forward_hooks


def global_forward_hooks(fast: bool) -> bool:
    """Whether forward hooks registered for every module are in place. The public path cannot see them (their
    registry is private) and answers False."""
    return fast and bool(_global_forward_hooks())


def has_forward_hooks(module: nn.Module) -> bool:
    """Whether the module holds forward hooks of its own (the fast path reads its private dict)."""
    return bool(module._forward_hooks)


def add_hook_to_dict(module: nn.Module, hook: Callable, *, pre: bool) -> tuple[dict, int]:
    """Put a forward hook (or pre-hook) straight into the module's hook dict, without register_forward_hook's
    RemovableHandle and its weak references (3.5 us a hook added and removed). Its id comes from the counter
    those handles take theirs from, so it runs exactly as a registered hook does. The entry to remove it by."""
    from torch.utils.hooks import RemovableHandle

    hooks = module._forward_pre_hooks if pre else module._forward_hooks
    key = RemovableHandle.next_id
    RemovableHandle.next_id += 1
    hooks[key] = hook
    return hooks, key


def remove_hook_from_dict(entry: tuple[dict, int]) -> None:
    hooks, key = entry
    hooks.pop(key, None)


NO_FORWARD = object()  # a module whose forward is its class's, with none of its own set on the instance


def instance_forward(module: nn.Module) -> Any:
    """The forward set on the instance (not its class's), or NO_FORWARD."""
    return vars(module).get("forward", NO_FORWARD)


def set_instance_forward(module: nn.Module, forward: Callable) -> None:
    """Replace the module's forward on the instance: ``__call__`` runs it. Written into the instance's
    ``__dict__``, not through setattr: a module's own ``__setattr__`` may do more."""
    vars(module)["forward"] = forward


def restore_instance_forward(module: nn.Module, own: Any) -> None:
    """Put back what instance_forward returned before set_instance_forward."""
    if own is NO_FORWARD:
        vars(module).pop("forward", None)
    else:
        vars(module)["forward"] = own


def gradient_edge_function(fast: bool) -> Callable[[torch.Tensor], Any]:
    """torch.autograd.graph.get_gradient_edge, or (``fast``) the same edge built without its checks."""
    from torch.autograd.graph import get_gradient_edge

    return _fast_gradient_edge if fast else get_gradient_edge


def _fast_gradient_edge(tensor: torch.Tensor) -> Any:
    """get_gradient_edge, without its checks where the tensor is the output of a built-in op (a layer's output
    almost always is): a microsecond or two per output, which a deep narrow model feels."""
    import torch
    from torch.autograd.graph import GradientEdge, get_gradient_edge

    node = tensor.grad_fn
    if node is None or isinstance(node, torch._C._FunctionBase):  # a leaf, or a custom autograd.Function
        return get_gradient_edge(tensor)
    return GradientEdge(node, tensor.output_nr)


def direct_parameters(module: nn.Module, fast: bool) -> dict[str, Any]:
    """The parameters the module holds itself, by name (a None entry possible on the fast path, which reads the
    module's private dict; the public path asks named_parameters, keeping duplicates)."""
    if fast:
        return module._parameters
    return dict(module.named_parameters(recurse=False, remove_duplicate=False))


def direct_buffers(module: nn.Module, fast: bool) -> list[Any]:
    """The buffers the module holds itself, in order (None entries possible on the fast path)."""
    if fast:
        return list(module._buffers.values())
    return [buffer for _, buffer in module.named_buffers(recurse=False, remove_duplicate=False)]


def child_registry(module: nn.Module) -> dict[str, Any]:
    """A module's children by name, None entries and a child registered twice included, as the module holds them:
    named_children() skips a repeat, and writing to this dict replaces a child in place (the fixes tried on a
    copy do). No public API gives either."""
    return module._modules


# A tensor's version counter: how many in-place ops have changed it (no public API reads it).
tensor_version = operator.attrgetter("_version")
