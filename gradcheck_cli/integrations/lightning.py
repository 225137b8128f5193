"""PyTorch Lightning: a ``Callback`` that runs a gradcheck ``Monitor`` on the LightningModule.

    from gradcheck_cli.integrations.lightning import MonitorCallback

    trainer = Trainer(callbacks=[MonitorCallback(every=100, log="history.jsonl")])

The monitor steps in ``on_before_optimizer_step``: Lightning calls it once per optimizer step, after the
gradients of all accumulated batches are summed, after AMP has unscaled them and before gradient clipping
(lightning/pytorch/core/hooks.py says so), which is what the monitor must read. ``on_after_backward`` runs
after every backward, so with ``accumulate_grad_batches`` it would see partial sums, several times a step.

Only the global-zero process monitors: under DDP every rank holds the same reduced gradients, and one
process writes the history and warns. The loss is not passed (Lightning does not hand it to this hook):
a NaN loss shows in the gradients of the same step.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone pytorch_lightning package
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError as error:
        raise ImportError(
            "gradcheck_cli.integrations.lightning needs PyTorch Lightning: pip install lightning"
        ) from error

from gradcheck_cli.monitor.monitor import Monitor


class MonitorCallback(Callback):
    """Run a ``Monitor`` while the Trainer fits: ``every`` and ``options`` are the Monitor's arguments
    (``on_problem``, ``history``, ``log``, ``thresholds``, ...). The monitor is ``callback.monitor``; its
    steps are numbered as ``trainer.global_step + 1``, so a resumed run keeps its numbers."""

    def __init__(self, every: int = 100, **options: Any):
        self.every = every
        self.options = options
        self.monitor: Monitor | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        note = "stepped by PyTorch Lightning in on_before_optimizer_step (accumulated, unscaled, before clipping)"
        options = {"note": note, **self.options}
        self.monitor = Monitor(pl_module, self.every, start_step=trainer.global_step + 1, **options)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self.monitor is not None and self.monitor.attached:
            self.monitor.step()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None:
            self.monitor.detach()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        # The model is left as found even when training fails; a problem found now is kept, not raised.
        if self.monitor is not None:
            self.monitor.__exit__(type(exception), exception, exception.__traceback__)
