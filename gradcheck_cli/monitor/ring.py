"""The ring of per-step gradient norms and losses kept on the device between two read-outs, so that no step
waits for the device, and the one host transfer that empties it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gradcheck_cli.common.errors import InvalidOptionError

# Device memory for the ring of per-step norms: 16 MB holds 100 steps of 20,000 parameter tensors.
RING_BUDGET_BYTES = 16 * 2**20

Rows = list[list[float | None]]


class NormRing:
    """One row of per-parameter gradient norms per step read since the last read-out (a step each until the
    next sample, within RING_BUDGET_BYTES: past it, a very large ``every``, the full ring is read out and
    judged between samples), and each row's loss. A row holds every tracked parameter's norm, or the watch's
    only: the first columns."""

    def __init__(self, rows: int, params: list[nn.Parameter]):
        self.capacity = max(1, min(rows, RING_BUDGET_BYTES // (8 * len(params))))
        self.width = len(params)
        dtypes = {p.dtype for p in params}
        # Half-precision norms overflow at 65504: low-precision gradients are normed in float32.
        self._norm_dtype = torch.float64 if torch.float64 in dtypes else torch.float32
        self._norm_dtype_arg = None if dtypes == {self._norm_dtype} else self._norm_dtype
        self._spread = len({param.device for param in params}) > 1
        self.norms: torch.Tensor | None = None
        self._losses: torch.Tensor | None = None
        self.unread = 0
        self._missing: list[list[int] | None] = [None] * self.capacity  # per row: parameters without a gradient
        self._loss_given: list[Any] = [None] * self.capacity  # per row: None, "tensor", or the loss as a float
        self.row_steps: list[int] = [0] * self.capacity  # per row: its step
        self.full: list[bool] = [True] * self.capacity  # per row: every norm taken (else the watch's only)

    @property
    def is_full(self) -> bool:
        return self.unread == self.capacity

    def last_full_step(self) -> int | None:
        """The step of the last unread row that took every norm; None where none did."""
        last_full = [slot for slot in range(self.unread) if self.full[slot]]
        return self.row_steps[last_full[-1]] if last_full else None

    def add(self, step: int, full: bool, params: list[nn.Parameter], loss: Any) -> None:
        """The next row: ``step``'s gradient norms of ``params`` (the tracked ones, or the watch's) and its loss."""
        slot = self.unread
        self.row_steps[slot] = step
        self.full[slot] = full
        self._record_norms(slot, params)
        self._record_loss(slot, loss)
        self.unread += 1

    def _record_norms(self, slot: int, params: list[nn.Parameter]) -> None:
        grads = [p.grad for p in params]
        missing = None
        if any(g is None for g in grads):
            missing = [i for i, g in enumerate(grads) if g is None]
            if len(missing) == len(grads):
                self._missing[slot] = missing
                if self.norms is not None:
                    self.norms[slot].zero_()
                return
            empty = next(g for g in grads if g is not None).new_empty(0)
            grads = [empty if g is None else g for g in grads]
        self._missing[slot] = missing
        if self.norms is None:
            self.norms = torch.empty(self.capacity, self.width, dtype=self._norm_dtype, device=grads[0].device)
        if self._norm_dtype_arg is None:
            norms = torch._foreach_norm(grads, 2)
        else:
            norms = torch._foreach_norm(grads, 2, dtype=self._norm_dtype_arg)
        if self._spread:  # parameters on several devices: gathered device to device
            norms = [n.to(self.norms.device) for n in norms]
        torch.stack(norms, out=self.norms[slot, : len(params)])

    def _record_loss(self, slot: int, loss: Any) -> None:
        if loss is None:
            self._loss_given[slot] = None
            return
        if not isinstance(loss, torch.Tensor):
            try:
                self._loss_given[slot] = float(loss)
            except (TypeError, ValueError):
                raise InvalidOptionError(
                    f"monitor.step(loss) takes the loss as a tensor or a number (got {type(loss).__name__})."
                ) from None
            return
        if loss.numel() != 1:
            raise InvalidOptionError(
                f"monitor.step(loss) takes the scalar loss (got a tensor of shape {tuple(loss.shape)}); pass "
                "the loss that backward() was called on."
            )
        if self._losses is None or self._losses.device != loss.device:
            self._losses = torch.zeros(self.capacity, dtype=torch.float64, device=loss.device)
            self._loss_given = [None if kind == "tensor" else kind for kind in self._loss_given]
        self._losses[slot].copy_(loss.detach().reshape(()))
        self._loss_given[slot] = "tensor"

    def transfer(
        self, scalars: list[torch.Tensor], watch_width: int, device: torch.device
    ) -> tuple[Rows, list[bool], list[float | None], list[float]]:
        """The one host transfer: every unread step's norms (and whether they are all of them, or the first
        ``watch_width``, the watch's), its loss, and the values of ``scalars`` (0-d or 1-d tensors), in order.
        Empties the ring. ``device``: where to join them when no norm was taken yet."""
        count, width = self.unread, self.width
        if self.norms is not None:
            device = self.norms.device
        parts = []
        if self.norms is not None:
            parts.append(self.norms[:count].reshape(-1))
        if self._losses is not None:
            parts.append(self._losses[:count])
        if scalars:
            parts.append(torch.cat([s.to(device, torch.float64).reshape(-1) for s in scalars]))
        host = torch.cat([part.to(device, torch.float64) for part in parts]).tolist() if parts else []
        rows: Rows = []
        full = self.full[:count]
        for slot in range(count):
            taken = width if full[slot] else watch_width
            row: list[float | None] = (
                host[slot * width : slot * width + taken] if self.norms is not None else [None] * taken
            )
            for i in self._missing[slot] or ():
                row[i] = None
            rows.append(row)
        offset = count * width if self.norms is not None else 0
        losses = [
            host[offset + slot] if self._loss_given[slot] == "tensor" else self._loss_given[slot]
            for slot in range(count)
        ]
        offset += count if self._losses is not None else 0
        self.unread = 0
        self._loss_given = [None] * self.capacity
        return rows, full, losses, host[offset:]

    def release(self) -> None:
        """Let the device memory go (the monitor is detached)."""
        self.norms = self._losses = None
