"""A layer whose gradient is exactly zero in one batch but not in another can learn (issue 22, an SSD's heads):
the probe reads such a layer's gradient again on the later passes, and only a zero in every pass is flagged."""

import pytest
import torch
from torch import nn

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.choices import FindingKind, Severity, Verdict
from gradcheck_cli.judge.diagnosis import diagnose
from gradcheck_cli.measure.probe import probe_model


class TwoHeads(nn.Module):
    """A shared trunk and two heads; the second head's loss counts only the samples marked positive, as an SSD's
    box regression counts only the anchors matched to an object."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(6, 6)
        self.scores = nn.Linear(6, 1)
        self.boxes = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.trunk(x))
        return self.scores(h), self.boxes(h)


def positives_only_loss(output, batch: Batch) -> torch.Tensor:
    scores, boxes = output
    positive = batch.target.unsqueeze(1)
    box_loss = (boxes.pow(2) * positive).sum() / positive.sum().clamp(min=1)
    return scores.pow(2).mean() + box_loss


def batches(positive_from_pass: int | None):
    """Samples with no positive before pass ``positive_from_pass`` (None: never)."""

    def make_batch(index: int) -> Batch:
        x = torch.randn(8, 6)
        positive = index >= positive_from_pass if positive_from_pass is not None else False
        target = (torch.arange(8) % 2 == 0).float() if positive else torch.zeros(8)
        return Batch(args=(x,), target=target, size=8)

    return make_batch


def zero_findings(result):
    return [f for f in diagnose(result).findings if f.kind is FindingKind.ZERO_GRADIENT]


def test_a_head_without_a_loss_in_the_first_batch_only_is_not_zero_gradient():
    torch.manual_seed(0)
    result = probe_model(TwoHeads(), batches(positive_from_pass=1), positives_only_loss, passes=3)
    boxes = result.layer("boxes")
    # The figures are the first pass's (exactly zero there), and a later pass gave it a gradient.
    assert boxes.grad_norm == 0.0 and boxes.grad_nonzero_in_a_pass
    assert zero_findings(result) == []
    assert diagnose(result).verdict is Verdict.HEALTHY
    # The total gradient norm is still the first pass's alone: the later passes read only the zero layer's.
    assert len(result.total_grad_norms) == 1


def test_a_head_zero_in_every_pass_is_still_flagged():
    torch.manual_seed(0)
    result = probe_model(TwoHeads(), batches(positive_from_pass=None), positives_only_loss, passes=3)
    assert not result.layer("boxes").grad_nonzero_in_a_pass
    (finding,) = zero_findings(result)
    assert finding.severity is Severity.ERROR and finding.layers == ["boxes"]


def test_one_pass_sees_one_batch_and_flags_it():
    torch.manual_seed(0)
    result = probe_model(TwoHeads(), batches(positive_from_pass=1), positives_only_loss, passes=1)
    assert [f.layers for f in zero_findings(result)] == [["boxes"]]


def test_only_the_layers_zero_on_the_first_pass_have_their_gradients_read_again():
    """A healthy layer's gradient is computed on the first pass only: the re-read costs nothing where no layer
    got exactly zero."""
    torch.manual_seed(0)
    model = TwoHeads()
    computed = {"trunk": 0, "boxes": 0}
    for name in computed:
        getattr(model, name).weight.register_hook(
            lambda grad, name=name: computed.__setitem__(name, computed[name] + 1)
        )
    probe_model(model, batches(positive_from_pass=2), positives_only_loss, passes=3)
    assert computed == {"trunk": 1, "boxes": 3}


class SkippedBranch(nn.Module):
    """A branch that runs only for batches that have positives: it gets no gradient at all in the others."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(6, 6)
        self.branch = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        return h + self.branch(h) * positive.unsqueeze(1) if bool(positive.any()) else h


def test_a_branch_that_runs_in_later_batches_only_is_not_off_the_loss_path():
    def make_batch(index: int) -> Batch:
        positive = torch.full((8,), float(index > 0))
        return Batch(args=(torch.randn(8, 6), positive), size=8)

    torch.manual_seed(0)
    result = probe_model(SkippedBranch(), make_batch, lambda out, batch: out.pow(2).mean(), passes=3)
    branch = result.layer("branch")
    assert branch.grad_norm is None and branch.grad_nonzero_in_a_pass
    assert zero_findings(result) == []


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("positive_from_pass, flagged", [(2, False), (None, True)])
def test_a_model_without_hooks_reads_every_pass(positive_from_pass, flagged):
    """TorchScript takes no hooks: every pass reads every gradient, and the figures are medians (zero here in
    two passes of three); a nonzero gradient in any pass still says the layer can learn."""
    torch.manual_seed(0)
    model = torch.jit.script(TwoHeads())
    result = probe_model(model, batches(positive_from_pass), positives_only_loss, passes=3)
    assert result.layer("boxes").grad_norm == 0.0
    assert bool(zero_findings(result)) is flagged
