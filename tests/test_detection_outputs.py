"""Models that return their own losses are trained on them, never fitted to (issue 22, item 6).

torchvision's detectors in training mode return a dict of 0-d losses (loss_classifier, loss_box_reg,
loss_objectness, loss_rpn_box_reg). The first of them used to be taken as "the output" and fitted with MSE
against a random number: the parameters only the other losses depend on got no gradient, and the scan said
zero_gradient (an error, exit 1, on Faster R-CNN). The models here are small hand-made ones returning such
outputs; the slow test at the end scans torchvision's Faster R-CNN itself.
"""

import collections
import dataclasses
import json
import sys

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.choices import FindingKind, LossKind, Verdict
from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.common.options import ScanOptions
from gradcheck_cli.load.objective import Objective, own_losses, select_output
from gradcheck_cli.scan.scan import scan_model

DETECTOR_LOSSES = "the model returns losses (loss_classifier, loss_box_reg, loss_objectness): their sum is the loss"


# A detector in miniature: images and targets in, a dict of losses out, as torchvision's in training mode.
DETECTOR_FILE = """\
import torch
import torch.nn.functional as F
from torch import nn


class ToyDetector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.objectness = nn.Conv2d(8, 1, 1)
        self.classifier = nn.Linear(8, 5)
        self.box_regressor = nn.Linear(8, 4)

    def forward(self, images, targets):
        features = self.backbone(torch.stack(images))
        pooled = features.mean((2, 3))
        labels = torch.stack([target["labels"][0] for target in targets])
        boxes = torch.stack([target["boxes"][0] for target in targets])
        objectness = self.objectness(features).mean((1, 2, 3))
        return {
            "loss_classifier": F.cross_entropy(self.classifier(pooled), labels),
            "loss_box_reg": F.smooth_l1_loss(self.box_regressor(pooled), boxes / 16),
            "loss_objectness": F.binary_cross_entropy_with_logits(objectness, torch.ones_like(objectness)),
        }


model = ToyDetector()


def example_inputs():  # what a detector takes in training mode: a list of images, a list of their targets
    images = [torch.rand(3, 16, 16) for _ in range(4)]
    targets = [{"boxes": torch.tensor([[1.0, 2.0, 8.0, 9.0]]), "labels": torch.tensor([1])} for _ in range(4)]
    return images, targets
"""


def objective_loss(output, kind=None):
    objective = Objective(nn.Linear(2, 2), kind, {})
    return objective(output, Batch(args=())), objective


def number(value: float) -> torch.Tensor:
    return torch.tensor(value, requires_grad=True)


class ModelOutputStandIn(collections.OrderedDict):
    """Like transformers.ModelOutput: an OrderedDict subclass whose fields are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclasses.dataclass
class LossesDataclass:
    loss_mask: torch.Tensor
    loss_dice: torch.Tensor


# ---------------------------------------------------------------------------------------------------------
# A scan of a detector


def test_detector_losses_are_summed_not_fitted_with_mse():
    torch.manual_seed(0)
    namespace: dict = {}
    exec(DETECTOR_FILE, namespace)
    report = scan_model(namespace["model"], ScanOptions(passes=1), namespace=namespace)
    context = dict(report.context)
    assert context["loss"] == f"{DETECTOR_LOSSES} (chosen automatically)"
    assert context["output"] == "output.loss_classifier, output.loss_box_reg, output.loss_objectness (3 single numbers)"
    # Every head is on the loss's path: the objectness and box heads got a gradient too.
    assert all(layer.grad_norm for layer in report.result.layers), [
        (layer.name, layer.grad_norm) for layer in report.result.layers
    ]
    assert FindingKind.ZERO_GRADIENT not in {finding.kind for finding in report.diagnosis.findings}
    assert report.verdict is Verdict.HEALTHY


def test_detector_scan_from_the_command_line_exits_0(tmp_path, monkeypatch):
    (tmp_path / "model.py").write_text(DETECTOR_FILE)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["scan", "model.py", "--format", "json", "--passes", "1"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["context"]["loss"] == f"{DETECTOR_LOSSES} (chosen automatically)"


# ---------------------------------------------------------------------------------------------------------
# Which outputs are the model's losses


def test_dict_of_losses_is_summed():
    a, b = number(1.5), number(0.25)
    loss, objective = objective_loss({"loss_classifier": a, "loss_box_reg": b, "num_boxes": torch.tensor(3)})
    assert loss.item() == pytest.approx(1.75)
    loss.backward()
    assert a.grad.item() == 1.0 and b.grad.item() == 1.0  # each loss contributes, none is fitted to noise
    assert objective.loss_description == (
        "the model returns losses (loss_classifier, loss_box_reg): their sum is the loss (chosen automatically)"
    )


def test_tuple_of_losses_is_summed():
    loss, objective = objective_loss((number(1.0), number(2.0)))
    assert loss.item() == pytest.approx(3.0)
    assert objective.output_description == "output[0], output[1] (2 single numbers)"


def test_dataclass_of_losses_is_summed():
    loss, objective = objective_loss(LossesDataclass(number(1.0), number(0.5)))
    assert loss.item() == pytest.approx(1.5)
    assert "losses (loss_mask, loss_dice): their sum is the loss" in objective.loss_description


def test_single_number_output_is_the_loss():
    loss, objective = objective_loss(number(2.5))
    assert loss.item() == pytest.approx(2.5)
    assert (
        objective.loss_description == "the model returns its loss (the output): it is the loss (chosen automatically)"
    )


def test_loss_field_of_a_model_output_is_used_over_its_logits():
    # A transformers model given labels returns its loss, aux losses included: it is the training objective.
    the_loss = number(0.7)
    output = ModelOutputStandIn(loss=the_loss, aux_loss=number(0.1), logits=torch.randn(8, 4, requires_grad=True))
    loss, objective = objective_loss(output)
    assert loss.item() == pytest.approx(0.7)
    assert objective.output_description == "output.loss, a single number"
    assert objective.loss_description == (
        "the model returns its loss (output.loss): it is the loss (chosen automatically)"
    )


def test_loss_attribute_of_any_object_is_used():
    class Output:
        def __init__(self):
            self.loss = number(0.3)
            self.logits = torch.randn(8, 4)

    loss, _ = objective_loss(Output())
    assert loss.item() == pytest.approx(0.3)


def test_without_a_loss_the_logits_are_fitted():
    output = ModelOutputStandIn(loss=None, logits=torch.randn(8, 4), temperature=number(0.07))
    assert own_losses(output) is None  # a single number beside a prediction is not a list of losses
    _, objective = objective_loss(output)
    assert objective.output_description == "output.logits (8, 4)"
    assert objective.loss_description.startswith("cross-entropy against random labels over 4 classes")


def test_mse_is_never_fitted_to_a_single_number():
    features = torch.randn(8, 6)
    tensor, where = select_output((number(0.1), features))
    assert tensor is features and where == "output[1] (8, 6) (the first floating-point tensor)"
    with pytest.raises(GradcheckError, match="holds only single numbers"):
        select_output(number(0.1))


# ---------------------------------------------------------------------------------------------------------
# --loss on an output of losses


def test_loss_option_mean_averages_the_losses():
    loss, objective = objective_loss({"a": number(1.0), "b": number(3.0)}, LossKind.MEAN)
    assert loss.item() == pytest.approx(2.0)
    assert objective.loss_description == "the model returns losses (a, b): their mean is the loss (from --loss)"


def test_loss_option_sum_sums_the_losses():
    loss, _ = objective_loss({"a": number(1.0), "b": number(3.0)}, LossKind.SUM)
    assert loss.item() == pytest.approx(4.0)


@pytest.mark.parametrize("kind", [LossKind.MSE, LossKind.CE])
def test_loss_option_that_fits_an_output_refuses_an_output_of_losses(kind):
    with pytest.raises(GradcheckError) as caught:
        objective_loss({"loss_classifier": number(1.0), "loss_box_reg": number(0.5)}, kind)
    assert str(caught.value) == (
        "the model's output (dict) holds only single numbers, the losses it computed (output.loss_classifier, "
        "output.loss_box_reg), and no tensor to fit --loss ce or mse to; drop --loss to train on their sum, or "
        "define loss_fn(output, inputs) in the model file."
    )


def test_loss_option_ce_fits_the_logits_beside_a_loss_field():
    logits = torch.randn(8, 4, requires_grad=True)
    _, objective = objective_loss(ModelOutputStandIn(loss=number(0.7), logits=logits), LossKind.CE)
    assert objective.output_description == "output.logits (8, 4)"
    assert objective.loss_description == "cross-entropy against random labels over 4 classes (from --loss)"


# ---------------------------------------------------------------------------------------------------------
# torchvision's Faster R-CNN (slow: about 10 s of CPU)


@pytest.fixture
def torchvision_detection(monkeypatch):
    """torchvision, with NMS and RoIAlign runnable beside the CPU torch: the wheel on the package index is a
    CUDA build whose C++ operators do not load here. NMS gets a plain Python kernel (greedy, as torchvision's
    CPU kernel), RoIAlign torchvision's own Python fallback, uncompiled (compiling it needs a C++ compiler)."""
    from tests.zoo.torchvision_import import define_missing_operators

    define_missing_operators()
    torchvision = pytest.importorskip("torchvision")
    if not torchvision.extension._has_ops():
        if not torch._C._dispatch_has_kernel_for_dispatch_key("torchvision::nms", "CPU"):
            torch.library.impl("torchvision::nms", "CPU")(_greedy_nms)
        monkeypatch.setattr(sys.modules["torchvision.ops.boxes"], "_assert_has_ops", lambda: None)
        roi_align = sys.modules["torchvision.ops.roi_align"]
        monkeypatch.setattr(roi_align, "_roi_align", getattr(roi_align._roi_align, "__wrapped__", roi_align._roi_align))
    return torchvision


def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    import torchvision

    order, keep = scores.argsort(descending=True), []
    while order.numel():
        keep.append(order[0])
        overlap = torchvision.ops.box_iou(boxes[order[0]][None], boxes[order[1:]])[0]
        order = order[1:][overlap <= iou_threshold]
    return torch.stack(keep) if keep else order


@pytest.mark.slow
def test_torchvision_faster_rcnn_in_training_mode_is_healthy(torchvision_detection):
    torch.manual_seed(0)
    model = torchvision_detection.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128,
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100, box_batch_size_per_image=16,
    )  # fmt: skip

    def example_inputs():
        images = [torch.rand(3, 128, 128) for _ in range(2)]
        targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([1])} for _ in range(2)]
        return images, targets

    report = scan_model(model, ScanOptions(passes=1), namespace={"example_inputs": example_inputs})
    assert dict(report.context)["loss"] == (
        "the model returns losses (loss_classifier, loss_box_reg, loss_objectness, loss_rpn_box_reg): their sum "
        "is the loss (chosen automatically)"
    )
    assert FindingKind.ZERO_GRADIENT not in {finding.kind for finding in report.diagnosis.findings}
    assert not report.fails()
