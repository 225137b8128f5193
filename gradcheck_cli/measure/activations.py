"""Activation sites and their statistics: per call of an activation module, the squared derivative phi'(h)^2
over the batch (in closed form from the output where that is exact), pooled into E[phi'^2], the saturated share
and, for ReLU-like sites, the share of units never active (Glorot & Bengio 2010; Lu et al. 2019)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradcheck_cli.common.stats import ActivationStats
from gradcheck_cli.measure.hooks import ForwardHooks, unwrapped_forward
from gradcheck_cli.measure.layer_figures import NORM_DTYPE, join_on
from gradcheck_cli.measure.layer_types import DYING, PEAK_DERIVATIVE, SATURATED_DERIVATIVE
from gradcheck_cli.measure.outputs import OutputWatch
from gradcheck_cli.measure.torch_compat import tensor_version

# Activation outputs are reduced together once they hold this much: their stacked copy stays small enough to
# be served from memory the allocator already holds (a stack of all of a pass's sites took fresh pages,
# which cost more than the per-site ops it saved).
ACTIVATION_BATCH_BYTES = 2**18


@functools.cache
def _all_but(rank: int, dim: int) -> tuple[int, ...]:
    return tuple(d for d in range(rank) if d != dim)


@dataclass
class ActivationSite:
    index: int
    name: str
    call: int  # which call of the module in a pass (a shared activation module is called per layer)
    type: str
    after: str | None
    unit_dim: int
    units: int  # channels or features: what can die as a whole
    dying: bool  # a ReLU-like type: its units can die, so their activity is counted
    # the dimensions a per-unit sum reduces, for inputs of the site's first rank
    reduce_dims: tuple[int, ...] = ()


@dataclass
class ActivationPass:
    """One pass's figures for the activation sites, kept on the device until the probe ends, in blocks of
    sites reduced together: (site indices, one row per site)."""

    unit_sums: list[tuple[list[int], torch.Tensor]] = field(default_factory=list)  # per-unit sums of phi'^2
    saturated: list[tuple[list[int], torch.Tensor]] = field(default_factory=list)  # sum of sign(bound - phi'^2)
    numel: dict[int, int] = field(default_factory=dict)  # site: values seen


class ActivationWatch:
    """The activation sites of one probe, one per (module, call in the pass): a shared nn.ReLU used after every
    layer is measured after each of them. Activations are watched in the first pass only (and the next, for a
    site whose output an in-place op overwrote before it was read: ``pending``)."""

    def __init__(self, outputs: OutputWatch) -> None:
        self._outputs = outputs  # the layer that ran last (what a site follows), and the first pass's overwrites
        self.sites: list[ActivationSite] = []
        self.passes: list[ActivationPass] = []
        self._pass = ActivationPass()
        self._site_index: dict[tuple[str, int], int] = {}
        self._calls: dict[str, int] = {}
        # Activation outputs kept until the forward pass ends, to be reduced together: (site, output, its
        # version, closed form of phi'^2). Sites whose output an in-place op overwrote before then are
        # reduced in their hook, and watched one more pass.
        self._kept: list[tuple[ActivationSite, torch.Tensor, int, Callable]] = []
        self._kept_bytes = 0
        self._immediate_sites: set[int] = set()
        self.pending = False

    def start_pass(self) -> None:
        self._calls = {}
        self._pass = ActivationPass()
        self._kept, self._kept_bytes = [], 0
        self.pending = False

    def finish_pass(self, exact: bool) -> None:
        """Keep the pass's figures where the pass stands (an inexact one is measured again)."""
        if exact:
            self.passes.append(self._pass)

    def hook(self, name: str, module: nn.Module, hooks: ForwardHooks) -> None:
        """Measure the squared derivative phi'(h)^2 on every element: in closed form from the output for
        the common types (one or two elementwise ops, right for in-place ones too), else by autograd on a
        copy of the input, taken before an in-place activation overwrites it.

        Outputs are kept and reduced together when the forward pass ends or they reach ACTIVATION_BATCH_BYTES
        (see reduce_kept): a deep narrow net would otherwise pay three small ops per site, more than the hook
        itself costs."""
        closed_form = squared_derivative_from_output(module)
        if closed_form is not None:

            def from_output(mod: nn.Module, args: tuple, output: Any) -> None:
                if isinstance(output, torch.Tensor) and output.is_floating_point() and output.numel():
                    site = self._site_seeing(name, mod, output)
                    # (detached, so no graph is built: no torch.no_grad() needed, which costs as much)
                    kept = (site, output.detach(), tensor_version(output), closed_form)
                    if site.index in self._immediate_sites:
                        self._reduce([kept])
                        return
                    self._kept.append(kept)
                    self._kept_bytes += output.numel() * output.element_size()
                    if self._kept_bytes > ACTIVATION_BATCH_BYTES:
                        self.reduce_kept()

            hooks.add(module, from_output)
            return

        def from_input(mod: nn.Module, args: tuple) -> None:
            derivative = derivative_by_autograd(mod, args)
            if derivative is not None and derivative.numel():
                site = self._site_seeing(name, mod, args[0])
                self._reduce([(site, derivative, tensor_version(derivative), _squared)])

        hooks.add(module, from_input, pre=True)

    def _site_seeing(self, name: str, module: nn.Module, values: torch.Tensor) -> ActivationSite:
        """The site of this call of an activation module, with the values it sees counted."""
        norms = self._outputs.norms
        if norms.last_output is not None:
            norms.note_overwrite()  # an in-place activation has just overwritten the output before it
        call = self._calls.get(name, 0)
        self._calls[name] = call + 1
        site = self._site(name, module, call, values)
        numel = self._pass.numel
        numel[site.index] = numel.get(site.index, 0) + values.numel()
        return site

    def reduce_kept(self) -> None:
        """Reduce the activation outputs kept so far: when the forward pass ends or they reach
        ACTIVATION_BATCH_BYTES."""
        if self._kept:
            kept, self._kept, self._kept_bytes = self._kept, [], 0
            self._reduce(kept)

    def _reduce(self, kept: list[tuple[ActivationSite, torch.Tensor, int, Callable]]) -> None:
        """Per-unit sums of phi'^2 (one reduction gives both E[phi'^2] and, for ReLUs, which units were ever
        active) and, for saturating types, the saturated count: sites of one shape stacked, a few ops each.

        An output changed since its hook (an in-place op after the activation) is not counted this pass:
        its site is reduced in its hook from the next pass on, which keeps the activation hooks."""
        groups: dict[tuple, list[tuple[ActivationSite, torch.Tensor]]] = {}
        records = self._pass
        for site, values, version, closed_form in kept:
            if tensor_version(values) != version:
                self._immediate_sites.add(site.index)
                self.pending = True
                records.numel[site.index] -= values.numel()
                continue
            rank = values.dim()
            # A shape the site has not seen (its units cannot be told apart) is summed whole: reduce=None.
            if rank > 1 and values.shape[site.unit_dim] == site.units:
                reduce = site.reduce_dims if len(site.reduce_dims) == rank - 1 else _all_but(rank, site.unit_dim)
            else:
                reduce = None
            key = (closed_form, PEAK_DERIVATIVE.get(site.type), values.shape, values.dtype, values.device, reduce)
            groups.setdefault(key, []).append((site, values))
        for (closed_form, peak, shape, _, _, reduce), members in groups.items():
            indices = [site.index for site, _ in members]
            # one row per site (a copy of about ACTIVATION_BATCH_BYTES at most; a lone site is a view)
            stacked = torch.stack([v for _, v in members]) if len(members) > 1 else members[0][1].unsqueeze(0)
            squared = closed_form(stacked)
            rows = range(1, len(shape) + 1)
            if reduce is None:
                sums = torch.sum(squared, dim=list(rows), dtype=torch.float32).unsqueeze(1)
            else:
                sums = torch.sum(squared, dim=[d + 1 for d in reduce], dtype=torch.float32)
            records.unit_sums.append((indices, sums))
            if peak is not None:
                # count of phi'^2 below the bound, as (n + sum(sign(bound - phi'^2))) / 2: a sign and a sum
                # are several times faster than summing a boolean mask
                bound = (SATURATED_DERIVATIVE * peak) ** 2
                counts = torch.sum(torch.sign(bound - squared), dim=list(rows), dtype=torch.float32)
                records.saturated.append((indices, counts))

    def _site(self, name: str, module: nn.Module, call: int, h: torch.Tensor) -> ActivationSite:
        key = (name, call)
        if key not in self._site_index:
            last_layer = self._outputs.last_layer
            after = self._outputs.layers[last_layer] if last_layer is not None else None
            # Units are channels (dim 1) of a convolution's map, else the features (last dim).
            conv_after = after is not None and isinstance(
                after[1], (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)
            )
            rank = h.dim()
            unit_dim = 1 if rank >= 3 and (rank >= 4 or conv_after) else rank - 1
            units = int(h.shape[unit_dim]) if rank > 1 else 0
            self._site_index[key] = len(self.sites)
            self.sites.append(
                ActivationSite(
                    len(self.sites),
                    name or "(model)",
                    call,
                    type(module).__name__,
                    after[0] if after else None,
                    unit_dim,
                    units,
                    isinstance(module, DYING),
                    _all_but(rank, unit_dim),
                )  # fmt: skip
            )
        return self.sites[self._site_index[key]]

    def stats(self) -> list[ActivationStats]:
        return activation_stats(self.sites, self.passes)


def squared_derivative_from_output(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """phi'(h)^2 written in terms of y = phi(h), for the activations where that is exact. The same function
    for modules of one type and parameters, so that their sites are reduced together."""
    if isinstance(module, nn.ReLU):  # y >= 0, and phi' is 1 exactly where y > 0: sign(y)
        return torch.sign
    if isinstance(module, nn.Sigmoid):
        return _sigmoid_squared
    if isinstance(module, nn.Tanh):
        return _tanh_squared
    if isinstance(module, nn.ReLU6):
        return _relu6_squared
    if isinstance(module, nn.LeakyReLU):
        return _leaky_relu_squared(module.negative_slope)
    if isinstance(module, nn.ELU):  # y = alpha (e^h - 1) below 0, so phi' = y + alpha there
        return _elu_squared(1.0, module.alpha)
    if isinstance(module, nn.SELU):  # y = scale alpha (e^h - 1) below 0
        return _elu_squared(1.0507009873554805, 1.6732632423543772)
    return None


def _squared(derivative: torch.Tensor) -> torch.Tensor:
    return derivative.square()


def _sigmoid_squared(y: torch.Tensor) -> torch.Tensor:
    return (y - y * y).square_()


def _tanh_squared(y: torch.Tensor) -> torch.Tensor:
    return (1 - y * y).square_()


def _relu6_squared(y: torch.Tensor) -> torch.Tensor:
    return ((y > 0) & (y < 6)).to(y.dtype)


@functools.cache
def _leaky_relu_squared(slope: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda y: torch.where(y > 0, 1.0, slope * slope).to(y.dtype)


@functools.cache
def _elu_squared(scale: float, alpha: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """ELU (scale 1) and SELU: y = scale alpha (e^h - 1) below 0, so phi' = y + scale alpha there."""
    return lambda y: torch.where(y > 0, scale, y + scale * alpha).to(y.dtype).square_()


def derivative_by_autograd(module: nn.Module, args: tuple) -> torch.Tensor | None:
    """Any other elementwise activation: differentiate it again on a copy of its input."""
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
        return None
    with torch.enable_grad():
        leaf = args[0].detach().clone().requires_grad_(True)
        # (* 1.0: an in-place activation must not write to the leaf; unwrapped: a PReLU's layer hook must not
        # see this run, as it does not where its hook sits in the module's hook dict)
        out = unwrapped_forward(module)(leaf * 1.0)
        (derivative,) = torch.autograd.grad(out, leaf, torch.ones_like(out))
    return derivative


def activation_stats(sites: list[ActivationSite], passes: list[ActivationPass]) -> list[ActivationStats]:
    """Pooled over the passes: E[phi'^2] and the saturated share over every value seen, and for ReLU-like
    sites the share of units never active in any pass. All sites are reduced together: one transfer."""
    calls: dict[str, int] = {}
    for site in sites:
        calls[site.name] = max(calls.get(site.name, 0), site.call + 1)
    numel = [0] * len(sites)
    for records in passes:
        for index, count in records.numel.items():
            numel[index] += count
    blocks = [block for records in passes for block in records.unit_sums]
    saturated = [block for records in passes for block in records.saturated]
    totals, alive, flat_counts = [0.0] * len(sites), [0.0] * len(sites), [0.0] * len(sites)
    if blocks:
        device = blocks[0][1].device
        n = len(sites)
        offsets, position = [], 0  # where each site's units start among all sites' units
        for site in sites:
            offsets.append(position)
            position += site.units
        site_totals = torch.zeros(n, dtype=NORM_DTYPE, device=device)
        hits = torch.zeros(position, dtype=NORM_DTYPE, device=device)  # per unit: passes where it was active
        # The rows of one width joined: a few ops for all the sites, whatever their number.
        by_width: dict[int, list[tuple[list[int], torch.Tensor]]] = {}
        for indices, rows in blocks:
            by_width.setdefault(rows.shape[1], []).append((indices, rows))
        for width, parts in by_width.items():
            indices = [index for part, _ in parts for index in part]
            rows = join_on(torch.cat, [rows for _, rows in parts], device)
            site_totals.index_add_(0, torch.tensor(indices, device=device), rows.sum(dim=1, dtype=NORM_DTYPE))
            # A unit is alive if its sum of phi'^2 was positive in some pass.
            per_unit = [k for k, index in enumerate(indices) if sites[index].dying and sites[index].units == width]
            if per_unit:
                starts = torch.tensor([offsets[indices[k]] for k in per_unit], device=device)
                unit_ids = starts.unsqueeze(1) + torch.arange(width, device=device)
                active = rows if len(per_unit) == len(indices) else rows[per_unit]
                hits.index_add_(0, unit_ids.flatten(), (active > 0).flatten().to(NORM_DTYPE))
        # (output_size given: without it, CUDA reads the repeats' sum back to the host first)
        unit_site = torch.repeat_interleave(
            torch.arange(n, device=device), torch.tensor([s.units for s in sites], device=device), output_size=position
        )
        alive_units = torch.zeros(n, dtype=NORM_DTYPE, device=device).index_add_(
            0, unit_site, (hits > 0).to(NORM_DTYPE)
        )
        flat_total = torch.zeros(n, dtype=NORM_DTYPE, device=device)
        if saturated:
            flat_total.index_add_(
                0,
                torch.tensor([index for indices, _ in saturated for index in indices], device=device),
                join_on(torch.cat, [counts for _, counts in saturated], device).to(NORM_DTYPE),
            )
        host = torch.cat([site_totals, alive_units, flat_total]).tolist()  # the one transfer
        n = len(sites)
        totals, alive, flat_counts = host[:n], host[n : 2 * n], host[2 * n :]
    stats = []
    for site in sites:
        i, seen = site.index, numel[site.index]
        # sum of sign(bound - phi'^2) over the values = saturated - unsaturated
        saturated_fraction = (seen + flat_counts[i]) / (2 * seen) if seen and site.type in PEAK_DERIVATIVE else None
        stats.append(
            ActivationStats(
                name=f"{site.name}[{site.call}]" if calls[site.name] > 1 else site.name,
                type=site.type,
                after=site.after,
                units=site.units if site.dying else 0,
                saturated_fraction=saturated_fraction,
                dead_fraction=1.0 - alive[i] / site.units if site.dying and site.units and seen else None,
                derivative_rms=math.sqrt(totals[i] / seen) if seen else None,
            )
        )
    return stats
