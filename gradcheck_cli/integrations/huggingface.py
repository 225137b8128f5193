"""Hugging Face Transformers: a ``TrainerCallback`` that runs a gradcheck ``Monitor`` on the Trainer's model.

    from gradcheck_cli.integrations.huggingface import MonitorCallback

    trainer = Trainer(model, args, train_dataset=data, callbacks=[MonitorCallback(every=100, log="history.jsonl")])

The monitor steps in ``on_pre_optimizer_step``. In the Trainer's loop (transformers/trainer.py) each
optimizer step runs: backward for every accumulated batch, gradient clipping, ``on_pre_optimizer_step``,
``optimizer.step()``, ``on_optimizer_step``, ``model.zero_grad()``, ``on_step_end``. So ``on_step_end``
comes after the gradients are zeroed, and ``on_optimizer_step`` after the weights moved; only
``on_pre_optimizer_step`` sees this step's gradients with the weights they were computed at.

It does come after the Trainer's gradient clipping (``max_grad_norm``, 1.0 by default), and no callback
comes between the backward pass and the clipping. Clipping scales every layer by one factor, so the
per-layer profile, zero gradients and the depth trend read the same; but growth past the clipping level
is what clipping hides (the Trainer logs the norm before clipping as ``grad_norm``), and a NaN in one
layer's gradient becomes NaN in all of them, so the first step is named but not the first layer. The
history's note says so. Only the main process monitors; the loss is not passed (the Trainer does not hand
it to callbacks).
"""

from __future__ import annotations

from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as error:
    raise ImportError("gradcheck_cli.integrations.huggingface needs transformers: pip install transformers") from error

from gradcheck_cli.monitor.monitor import Monitor


class MonitorCallback(TrainerCallback):
    """Run a ``Monitor`` while the Trainer trains: ``every`` and ``options`` are the Monitor's arguments
    (``on_problem``, ``history``, ``log``, ``thresholds``, ...). The monitor is ``callback.monitor``; its
    steps are numbered as ``state.global_step + 1``, so a resumed run keeps its numbers."""

    def __init__(self, every: int = 100, **options: Any):
        self.every = every
        self.options = options
        self.monitor: Monitor | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or model is None:
            return
        clipping = (
            f"after the Trainer clipped the gradients to a total norm of {args.max_grad_norm:g}"
            if args.max_grad_norm and args.max_grad_norm > 0
            else "without gradient clipping"
        )
        note = f"stepped by the Hugging Face Trainer in on_pre_optimizer_step, {clipping}"
        options = {"note": note, **self.options}
        self.monitor = Monitor(model, self.every, start_step=state.global_step + 1, **options)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is not None and self.monitor.attached:
            self.monitor.step()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.monitor.detach()
