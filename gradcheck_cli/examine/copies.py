"""Copies of a user's model, and optimizer steps taken on a copy: the user's model is deep-copied first and
never stepped. Used by ``--steps N`` (training.py measures the copy after each step), by the zero-initialization
check (gradcheck_cli/examine/zero_init.py) and by the fixes tried on a copy (transforms.py).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator

import torch
from torch import nn

from gradcheck_cli.common.batches import BatchFn, LossFn
from gradcheck_cli.common.choices import Optimizer
from gradcheck_cli.common.errors import GradcheckError, ModelRunError, describe_exception
from gradcheck_cli.measure.torch_compat import child_registry

# Training batches are drawn after the probe's: batch indices from here on.
FIRST_TRAINING_BATCH = 1000


# copy.deepcopy takes about five Python frames per level of nested modules (deepcopy and _reconstruct for the
# module, _deepcopy_dict for its __dict__ and for its _modules), a model's own forward three: with the default
# recursion limit a model nested 200 levels deep ran but could not be copied (issue 21). Room for eight a level.
DEEPCOPY_FRAMES_PER_LEVEL = 8


def copy_model(model: nn.Module, purpose: str) -> nn.Module:
    try:
        return deepcopy_model(model)
    except Exception as error:
        raise GradcheckError(
            f"the model cannot be copied ({describe_exception(error)}), so {purpose} cannot run without "
            "touching your model; make it deep-copyable or drop the option."
        ) from error


def deepcopy_model(model: nn.Module) -> nn.Module:
    """copy.deepcopy with room for the model's nesting: deepcopy recurses several frames per level, and a model
    nested as deep as its own forward runs would otherwise hit RecursionError. Raises what deepcopy raises."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + DEEPCOPY_FRAMES_PER_LEVEL * _nesting_depth(model))
    try:
        return copy.deepcopy(model)
    finally:
        sys.setrecursionlimit(limit)


def _nesting_depth(model: nn.Module) -> int:
    """How many levels of submodules the model nests (walked without recursion, as it may be deep)."""
    deepest, seen, stack = 0, set(), [(model, 0)]
    while stack:
        module, depth = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in child_registry(module).values() if child is not None)
    return deepest


def train_copy(
    model: nn.Module,
    make_batch: BatchFn,
    loss_fn: LossFn,
    *,
    steps: int,
    optimizer: Optimizer = Optimizer.SGD,
    lr: float = 1e-3,
    seed: int = 0,
    purpose: str = "--steps",
) -> Iterator[tuple[int, nn.Module, float]]:
    """Yield (step, the copy after that step, that step's loss) for steps 1..``steps``.

    The global RNG is seeded with ``seed`` for the batches and restored after each step, so measuring
    the copy between steps does not change what the next step draws.
    """
    trained = copy_model(model, purpose)
    trained.train()
    params = [p for p in trained.parameters() if p.requires_grad]
    step_with = torch.optim.Adam(params, lr=lr) if optimizer is Optimizer.ADAM else torch.optim.SGD(params, lr=lr)
    generator_state = _seeded_state(seed)
    for step in range(1, steps + 1):
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(generator_state)
            batch = make_batch(FIRST_TRAINING_BATCH + step)
            step_with.zero_grad(set_to_none=True)
            try:
                loss = loss_fn(trained(*batch.args, **batch.kwargs), batch)
                loss.backward()
            except Exception as error:
                raise ModelRunError(
                    f"The model failed in training step {step}: {describe_exception(error)}", "training"
                ) from error
            step_with.step()
            generator_state = torch.get_rng_state()
        step_with.zero_grad(set_to_none=True)
        yield step, trained, float(loss.detach())


def _seeded_state(seed: int) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.get_rng_state()
