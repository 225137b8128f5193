"""Scans spread over the processes of a torchrun job (issue 8): models too big for one device.

Every process loads the model, shards it (the file's ``shard_model(model, mesh)``, FSDP2 with ``--fsdp``, or
else replicates it with DDP), draws the same global batch and keeps its slice. The probe sums its figures
over the processes in one collective per pass (``probe_model(..., reducer=...)``), so the report holds exact
global per-layer norms, the same as one process measuring the whole batch on the whole model. The first
process prints; every process exits with the first one's exit code.

torch.distributed is used here and nowhere else; only the CLI starts a distributed scan.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.overrides import TorchFunctionMode

from gradcheck_cli.common.batches import Batch, BatchFn, LossFn
from gradcheck_cli.common.errors import GradcheckError, InvalidOptionError, describe_exception
from gradcheck_cli.measure.torch_compat import FSDP2

SHARD_HOOK = "shard_model"
# A collective that waits this long means another process failed or hangs: it raises rather than blocking
# for ever. Generous, since loading a large model on a busy node can keep the others waiting that long.
COLLECTIVE_TIMEOUT = timedelta(minutes=5)
# The sync points agree on errors over their own gloo group, which outlives a timed-out collective on the
# default group: a process stuck there still reaches the next sync point and learns who failed.
SYNC_TIMEOUT = 2 * COLLECTIVE_TIMEOUT


@contextmanager
def distributed_run(
    rank: int, *, fsdp: bool = False, device: str = "auto", environ: Mapping[str, str] = os.environ
) -> Iterator[DistributedRun]:
    """Join the torchrun job for the length of the block: the process group (NCCL when the model goes to
    CUDA, gloo on the CPU), one GPU per process on a node, and a 1-D DeviceMesh over every process.
    ``device`` is --device: auto, cpu or cuda. The process group is destroyed however the block ends."""
    world = int(environ["WORLD_SIZE"])
    cuda = device != "cpu" and torch.cuda.is_available()
    local_rank = int(environ.get("LOCAL_RANK", rank))
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise InvalidOptionError(
                f"process {rank} (LOCAL_RANK {local_rank}) has no GPU of its own: torch sees "
                f"{torch.cuda.device_count()} on this node; start one process per GPU, or pass --device cpu."
            )
        torch.cuda.set_device(local_rank)  # "cuda" is then this process's GPU, for --device and the mesh
    backend, where = ("nccl", torch.device("cuda", local_rank)) if cuda else ("gloo", torch.device("cpu"))
    try:
        dist.init_process_group(
            backend, rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT, **({"device_id": where} if cuda else {})
        )
    except Exception as error:
        raise GradcheckError(
            f"process {rank} could not join the torchrun job ({backend}): {error}; check that every process "
            "was started by the same torchrun command."
        ) from error
    run = sync_group = None
    try:
        from torch.distributed.device_mesh import init_device_mesh

        sync_group = dist.new_group(backend="gloo", timeout=SYNC_TIMEOUT)
        run = DistributedRun(rank, world, backend, init_device_mesh(where.type, (world,)), sync_group, fsdp)
        yield run
    finally:
        dist.destroy_process_group()
        # A gloo group's worker threads outlive destroy_process_group while the group is referenced, and a
        # worker still freeing the last collective's tensors once the interpreter has begun to exit aborts
        # the process ("terminate called without an active exception"). The sync group's collectives come
        # last: release it now, so its threads are joined while Python is alive.
        if run is not None:
            run.sync_group = run.mesh = None
        sync_group = None
        gc.collect()


@dataclass
class DistributedRun:
    """This process's place in the job, and what a scan needs from it: the model spread over the
    processes, the batch split between them, and the probe's figures summed over them (``Reducer``)."""

    rank: int
    world_size: int
    backend: str
    mesh: Any  # torch.distributed.device_mesh.DeviceMesh, 1-D over every process
    sync_group: Any  # the gloo group of the sync points
    fsdp: bool = False

    @property
    def primary(self) -> bool:
        """The process that prints the report."""
        return self.rank == 0

    def check_options(self, verify: bool, steps: int) -> None:
        if verify or steps:
            option = "--verify" if verify else "--steps"
            raise InvalidOptionError(
                f"{option} trains or changes a copy of the model, which a model spread over processes does not "
                "give; drop it with --distributed, or scan on one process."
            )

    def spread(self, model: nn.Module, namespace: Mapping[str, Any], where: str) -> tuple[nn.Module, str]:
        """The model sharded or replicated over the processes, in place where possible (layer names stay
        the user's), and how, for the report: the file's ``shard_model(model, mesh)`` when it has one, else
        FSDP2 with --fsdp, else DDP."""
        hook = namespace.get(SHARD_HOOK)
        if callable(hook):  # the file knows its model best: its own sharding comes before --fsdp
            try:
                returned = hook(model, self.mesh)
            except Exception as error:
                raise GradcheckError(
                    f"{SHARD_HOOK}(model, mesh) in {where} raised {describe_exception(error)}"
                ) from error
            sharded = model if returned is None else returned
            if not isinstance(sharded, nn.Module):
                raise GradcheckError(
                    f"{SHARD_HOOK}(model, mesh) in {where} returned {type(returned).__name__}; return the model "
                    "(or None when it shards the model in place)."
                )
            return sharded, f"{SHARD_HOOK}(model, mesh) in {where}"
        if self.fsdp:
            blocks = top_level_blocks(model)
            FSDP2.require(f"upgrade torch, or define {SHARD_HOOK}(model, mesh) in the model file", InvalidOptionError)
            from torch.distributed.fsdp import fully_shard

            try:
                for block in blocks:
                    fully_shard(block, mesh=self.mesh)
                fully_shard(model, mesh=self.mesh)
            except Exception as error:
                raise GradcheckError(
                    f"FSDP2 could not shard the model ({describe_exception(error)}); define "
                    f"{SHARD_HOOK}(model, mesh) in {where} to shard it yourself."
                ) from error
            return model, f"FSDP2 fully_shard on {len(blocks)} top-level block{'s' * (len(blocks) != 1)} and the root"
        # DDP applied in place (torch's composable replicate builds a DistributedDataParallel over the
        # module's parameters): the DistributedDataParallel wrapper would prefix every layer name with
        # "module.", so a report or baseline would not line up with a one-process scan. A static graph
        # (every pass runs the same graph, as the probe's do) lets parameters the forward does not use
        # through without find_unused_parameters, which warns on every process when there are none.
        from torch.distributed._composable.replicate import replicate

        replicate(model, static_graph=True)
        return model, "replicated on every process (DDP)"

    def describe(self, how: str, batch_size: int) -> str:
        share = batch_size // self.world_size
        return f"{self.world_size} processes ({self.backend}), {share} of the {batch_size} samples each; {how}"

    def split(self, make_batch: BatchFn) -> BatchFn:
        """Every process draws the same global batch (the RNG is seeded alike) and keeps its slice, so N
        processes see the batch one process would."""

        def make_local_batch(index: int) -> Batch:
            return split_batch(make_batch(index), self.rank, self.world_size)

        return make_local_batch

    def split_loss(self, loss_fn: LossFn) -> LossFn:
        """The loss with its random draws made for the whole batch (see _WholeBatchDraws)."""

        def local_loss(output: Any, batch: Batch) -> torch.Tensor:
            with _WholeBatchDraws(batch.size or 1, self.rank, self.world_size):
                return loss_fn(output, batch)

        return local_loss

    # The probe's Reducer protocol: what it needs to sum its figures over processes.

    def local(self, tensor: torch.Tensor) -> torch.Tensor:
        """What this process counts of a parameter or gradient in a sum of squares over processes: its shard
        of a DTensor (FSDP2), counted by one process per replica along the mesh dimensions the tensor is
        replicated over; a plain tensor, the same on every process (DDP), only on the first."""
        if _is_dtensor(tensor):
            if any(placement.is_partial() for placement in tensor.placements):
                raise GradcheckError(
                    "a gradient is a DTensor with a Partial placement (not yet reduced over processes); reduce it "
                    f"in the model (or in {SHARD_HOOK}) before gradcheck reads it."
                )
            coordinate = tensor.device_mesh.get_coordinate()
            replica = coordinate is None or any(
                placement.is_replicate() and index != 0 for placement, index in zip(tensor.placements, coordinate)
            )
            local = tensor.to_local()
            return local.new_empty(0) if replica else local
        return tensor if self.primary else tensor.new_empty(0)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over the processes: one all_reduce."""
        dist.all_reduce(values)
        return values

    @contextmanager
    def sync_point(self) -> Iterator[None]:
        """Run one step (load, shard, scan) on every process and agree on how it ended before any goes on:
        when one process fails, every process raises, so none waits for ever in a collective the failed
        one never joins. The error told is the one that happened first: a process whose collective timed
        out or broke because another process failed raised later, and only echoes it. Processes that
        failed alike (the same sentence) each raise their own error."""
        failure: Exception | None = None
        failed_at = 0.0
        try:
            yield
        except Exception as error:  # the user's code included: every failure must reach the others
            failure = error
            failed_at = time.time()
        outcome = None if failure is None else (_echoes_another_process(failure), failed_at, _sentence(failure))
        outcomes: list[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(outcomes, outcome, group=self.sync_group)
        except Exception as error:
            raise GradcheckError(
                f"process {self.rank} lost contact with the other processes ({describe_exception(error)}); "
                "another process probably failed: see its output."
            ) from (failure or error)
        failed = [(rank, told) for rank, told in enumerate(outcomes) if told is not None]
        if not failed:
            return
        rank, (_, _, sentence) = min(failed, key=lambda item: (item[1][0], item[1][1], item[0]))
        if failure is not None and outcome[2] == sentence and isinstance(failure, GradcheckError):
            raise failure
        raise GradcheckError(f"process {rank} of {self.world_size}: {sentence}") from failure

    def agree_exit_code(self, code: int) -> int:
        """The first process's exit code (it printed the report) on every process."""
        shared = [code]
        try:
            dist.broadcast_object_list(shared, src=0, group=self.sync_group)
        except Exception:
            return max(code, 2)  # the first process is gone: it failed
        return int(shared[0])


def _is_dtensor(tensor: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # before torch 2.5 DTensor was private (torch.distributed._tensor); --fsdp needs 2.6
        return False
    return isinstance(tensor, DTensor)


def _echoes_another_process(error: BaseException) -> bool:
    """Whether a collective failed under this error (timed out, or its connection closed): what a process
    sees when another one failed first."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, getattr(dist, "DistError", ())):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _sentence(error: Exception) -> str:
    return str(error) if isinstance(error, GradcheckError) else describe_exception(error)


def top_level_blocks(model: nn.Module) -> list[nn.Module]:
    """What --fsdp shards one at a time before the root: the children with parameters of the model's
    largest nn.ModuleList or nn.Sequential (by parameter count), e.g. a transformer's blocks or an MLP's
    layers. Each is gathered only while it runs; the root's group holds the rest (embeddings, heads)."""
    stacks = [module for module in model.modules() if isinstance(module, (nn.ModuleList, nn.Sequential))]
    if not stacks:
        return []
    largest = max(stacks, key=_parameter_count)  # the first of equals: the outermost
    return [child for child in largest.children() if _parameter_count(child)]


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def split_batch(batch: Batch, rank: int, world_size: int) -> Batch:
    """Process ``rank``'s slice of a global batch: the samples [rank*B/N, (rank+1)*B/N) of every tensor
    that carries the batch (in dimension 0, or 1 for a time-major sequence); tensors without it (masks,
    position ids) are kept whole. The batch must split evenly: DDP and FSDP average the processes'
    gradients, which equals the whole batch's gradient only for equal slices."""
    size = batch.size or _leading_size(batch)
    if size % world_size:
        raise GradcheckError(
            f"the batch of {size} samples does not split evenly over {world_size} processes; use a batch size "
            f"that is a multiple of {world_size} (--batch-size, or in example_inputs())."
        )
    share = size // world_size

    def cut(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            dim = _batch_dim(value, size)
            return value if dim is None else value.narrow(dim, rank * share, share)
        if isinstance(value, (tuple, list)):
            cuts = [cut(item) for item in value]
            return tuple(cuts) if isinstance(value, tuple) else cuts
        if isinstance(value, dict):
            return {key: cut(item) for key, item in value.items()}
        return value

    return Batch(args=cut(batch.args), kwargs=cut(batch.kwargs), target=cut(batch.target), size=share)


def _leading_size(batch: Batch) -> int:
    stack: list[Any] = [batch.args, batch.kwargs]
    while stack:
        value = stack.pop(0)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
        if isinstance(value, (tuple, list)):
            stack[:0] = list(value)
        elif isinstance(value, dict):
            stack[:0] = list(value.values())
    return 1


def _batch_dim(tensor: torch.Tensor, size: int) -> int | None:
    if tensor.dim() >= 1 and tensor.shape[0] == size:
        return 0
    if tensor.dim() >= 2 and tensor.shape[1] == size:  # (time, batch, ...) as nn.RNN takes by default
        return 1
    return None


class _WholeBatchDraws(TorchFunctionMode):
    """Random tensors drawn inside the loss (gradcheck's default losses draw their random targets there)
    are drawn for the whole batch and cut to this process's rows: the targets are the ones a one-process
    scan draws for the same samples, and the RNG moves as far as it would there, so the next pass draws
    the same batch. A draw counts as per-sample when its first dimension is a multiple of the local batch
    (B/N samples, or B/N * T positions of a sequence); any other draw is left alone."""

    _LIKE = (torch.randn_like, torch.rand_like, torch.randint_like)
    _SIZED = (torch.randn, torch.rand, torch.randint)

    def __init__(self, share: int, rank: int, world_size: int):
        super().__init__()
        self.share, self.rank, self.world_size = share, rank, world_size

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if self.world_size > 1 and func in self._LIKE and args and isinstance(args[0], torch.Tensor):
            rows = self._rows(args[0].shape)
            if rows is not None:
                whole = args[0].new_empty((rows * self.world_size, *args[0].shape[1:]))
                return func(whole, *args[1:], **kwargs).narrow(0, self.rank * rows, rows)
        elif self.world_size > 1 and func in self._SIZED:
            size, resized = _size_argument(func, args, kwargs)
            rows = self._rows(size) if size is not None else None
            if rows is not None:
                args, kwargs = resized((rows * self.world_size, *size[1:]))
                return func(*args, **kwargs).narrow(0, self.rank * rows, rows)
        return func(*args, **kwargs)

    def _rows(self, shape: Any) -> int | None:
        if not shape or not isinstance(shape[0], int) or shape[0] < self.share or shape[0] % self.share:
            return None
        return int(shape[0])


def _size_argument(func: Callable, args: tuple, kwargs: dict) -> tuple[tuple[int, ...] | None, Callable]:
    """The size a sized random factory was called with, and the (args, kwargs) that call it with another:
    randn(2, 3), randn((2, 3)), randn(size=(2, 3)), randint(high, size), randint(low, high, size)."""
    if "size" in kwargs:
        return tuple(kwargs["size"]), lambda new: (args, {**kwargs, "size": new})
    if func is torch.randint:
        if len(args) >= 2 and isinstance(args[-1], (tuple, list)):
            return tuple(args[-1]), lambda new: ((*args[:-1], new), kwargs)
        return None, lambda new: (args, kwargs)
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0]), lambda new: ((new,), kwargs)
    if args and all(isinstance(a, int) for a in args):
        return tuple(args), lambda new: (tuple(new), kwargs)
    return None, lambda new: (args, kwargs)
