"""What the probe differentiates for a user's model: which output, and which loss.

A model that returns its own loss is trained on it: a `loss` field (a transformers output given labels), or
the sum of the single numbers it returns (torchvision detectors in training mode return a dict of losses).
Otherwise the default loss does not depend on the output's scale convention: cross-entropy against random
labels for class logits, mean squared error against random targets otherwise. The report says which was used.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.choices import LossKind
from gradcheck_cli.common.errors import GradcheckError, describe_exception

# Output fields in order of preference: Hugging Face ModelOutput objects and dicts use these names.
PREFERRED_KEYS = ("logits", "last_hidden_state", "prediction_logits", "output", "out", "y")
LOSS_FUNCTION_NAMES = ("loss_fn", "compute_loss")


class Objective:
    """A loss function for ``probe_model`` that records, on its first call, which output it used."""

    def __init__(self, model: nn.Module, kind: LossKind | None, namespace: dict[str, Any]):
        self.kind = kind
        self.user_loss = next((namespace[n] for n in LOSS_FUNCTION_NAMES if callable(namespace.get(n))), None)
        self.user_loss_name = next((n for n in LOSS_FUNCTION_NAMES if callable(namespace.get(n))), None)
        # The first embedding is the token embedding; later ones (positions, segments) are not vocabularies.
        first_embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
        self.vocab_size = first_embedding.num_embeddings if first_embedding is not None else None
        self.output_description = ""
        self.loss_description = ""

    def __call__(self, output: Any, batch: Batch) -> torch.Tensor:
        if self.user_loss is not None and self.kind is None:
            self.loss_description = f"{self.user_loss_name}(output, inputs) from the model file"
            self.output_description = "passed whole to the file's loss function"
            try:
                return self.user_loss(output, batch.target)
            except Exception as error:
                raise GradcheckError(
                    f"{self.user_loss_name}() in the model file raised {describe_exception(error)}"
                ) from error
        losses = own_losses(output)
        if losses is not None and self.kind in (None, LossKind.SUM, LossKind.MEAN):
            return self._combine(losses)
        tensor, where = select_output(output)
        self.output_description = where
        kind = self.kind or self._default_kind(tensor, where)
        loss, self.loss_description = _loss(kind, tensor, self.kind is None)
        return loss

    def _combine(self, losses: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
        # A model that returns losses is trained on them, never fitted to: MSE against a random number would
        # train one of them toward noise and leave the parameters the others depend on without a gradient
        # (torchvision detectors read as zero_gradient, issue 22).
        names = [name for name, _ in losses]
        chosen = "chosen automatically" if self.kind is None else "from --loss"
        device = losses[0][1].device  # a model spread over devices may compute its losses on several
        values = torch.stack([value.float().to(device) for _, value in losses])
        if len(losses) == 1:
            self.output_description = f"{names[0]}, a single number"
            self.loss_description = f"the model returns its loss ({names[0]}): it is the loss ({chosen})"
            return values.sum()
        self.output_description = f"{', '.join(names)} ({len(names)} single numbers)"
        how = "mean" if self.kind is LossKind.MEAN else "sum"
        listed = ", ".join(name.removeprefix("output.") for name in names)
        self.loss_description = f"the model returns losses ({listed}): their {how} is the loss ({chosen})"
        return values.mean() if self.kind is LossKind.MEAN else values.sum()

    def _default_kind(self, tensor: torch.Tensor, where: str) -> LossKind:
        if tensor.dim() >= 2 and tensor.shape[-1] >= 2 and ("logits" in where or self._looks_like_logits(tensor)):
            return LossKind.CE
        return LossKind.MSE

    def _looks_like_logits(self, tensor: torch.Tensor) -> bool:
        # (batch, classes), or (batch, tokens, vocabulary) of a language model.
        return tensor.dim() == 2 or (tensor.dim() == 3 and tensor.shape[-1] == self.vocab_size)


def own_losses(output: Any) -> list[tuple[str, torch.Tensor]] | None:
    """The losses the model computed itself, each with where it was found, or None when the output is
    something to fit a loss to. Its `loss` field when that is a single number (a transformers output given
    labels: the total, aux losses included); else every floating-point tensor of the output, when each is a
    single number (0-d): a dict, dataclass, tuple or list of losses, or a 0-d output tensor."""
    if isinstance(output, torch.Tensor):
        return [("the output", output)] if _is_single_number(output) else None
    fields = _fields(output)
    if fields is not None:
        if _is_single_number(fields.get("loss")):
            return [("output.loss", fields["loss"])]
        items = [(f"output.{key}", value) for key, value in fields.items()]
    elif isinstance(output, (tuple, list)):
        items = [(f"output[{index}]", value) for index, value in enumerate(output)]
    else:
        return None
    floats = [(where, value) for where, value in items if isinstance(value, torch.Tensor) and value.is_floating_point()]
    return floats if floats and all(value.dim() == 0 for _, value in floats) else None


def select_output(output: Any) -> tuple[torch.Tensor, str]:
    """The floating-point tensor to fit a loss to, and a description of where it was found. A single number
    (0-d) is never one: it is a loss the model computed (``own_losses``), not a prediction."""
    if isinstance(output, torch.Tensor):
        if _is_fittable(output):
            return output, f"the output tensor {tuple(output.shape)}"
        raise _no_float(output)
    fields = _fields(output)
    if fields is not None:
        for key in PREFERRED_KEYS:
            value = fields.get(key)
            if _is_fittable(value):
                return value, f"output.{key} {tuple(value.shape)}"
        for key, value in fields.items():
            if _is_fittable(value):
                return value, f"output.{key} {tuple(value.shape)} (the first floating-point field)"
        raise _no_float(output)
    if isinstance(output, (tuple, list)):
        for index, value in enumerate(output):
            if _is_fittable(value):
                return value, f"output[{index}] {tuple(value.shape)} (the first floating-point tensor)"
        raise _no_float(output)
    raise _no_float(output)


def _is_single_number(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() == 0


def _is_fittable(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() > 0


def _fields(output: Any) -> dict[str, Any] | None:
    """Named fields of a structured output, or None for plain tensors, tuples and lists."""
    if isinstance(output, dict):  # also transformers' ModelOutput, an OrderedDict
        return dict(output)
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return {f.name: getattr(output, f.name) for f in dataclasses.fields(output)}
    if isinstance(output, tuple) and hasattr(output, "_asdict"):  # a namedtuple
        return dict(output._asdict())
    if isinstance(output, (tuple, list, torch.Tensor)):
        return None
    named = {key: getattr(output, key) for key in ("loss", *PREFERRED_KEYS) if hasattr(output, key)}  # any object
    return named or None


def _no_float(output: Any) -> GradcheckError:
    losses = own_losses(output)
    if losses is not None:  # reached with --loss ce or mse only
        return GradcheckError(
            f"the model's output ({type(output).__name__}) holds only single numbers, the losses it computed "
            f"({', '.join(where for where, _ in losses)}), and no tensor to fit --loss ce or mse to; drop --loss "
            "to train on their sum, or define loss_fn(output, inputs) in the model file."
        )
    return GradcheckError(
        f"the model's output ({type(output).__name__}) holds no floating-point tensor to differentiate; "
        "define loss_fn(output, inputs) in the model file to say what to train on."
    )


def _loss(kind: LossKind, tensor: torch.Tensor, automatic: bool) -> tuple[torch.Tensor, str]:
    chosen = "chosen automatically" if automatic else "from --loss"
    if kind is LossKind.CE:
        if tensor.dim() < 2 or tensor.shape[-1] < 2:
            raise GradcheckError(
                f"--loss ce needs class logits with a class dimension last; the output is {tuple(tensor.shape)}. "
                "Use --loss mse."
            )
        if tensor.dim() >= 4:
            # (batch, classes, height, width[, depth]): per-position logits, classes in dimension 1.
            classes = tensor.shape[1]
            labels = torch.randint(0, classes, (tensor.shape[0], *tensor.shape[2:]), device=tensor.device)
            loss = F.cross_entropy(tensor.float(), labels)
        else:
            classes = tensor.shape[-1]
            logits = tensor.reshape(-1, classes).float()
            labels = torch.randint(0, classes, (logits.shape[0],), device=tensor.device)
            loss = F.cross_entropy(logits, labels)
        return loss, f"cross-entropy against random labels over {classes} classes ({chosen})"
    if kind is LossKind.MSE:
        target = torch.randn_like(tensor, dtype=torch.float32)
        return F.mse_loss(tensor.float(), target), f"mean squared error against random N(0, 1) targets ({chosen})"
    if kind is LossKind.SUM:
        return tensor.float().sum(), "the sum of the output (from --loss)"
    return tensor.float().mean(), "the mean of the output (from --loss)"
