"""--device and --amp: passes under autocast, fp16's range per layer, the loss scale, the CUDA refusal."""

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from gradcheck_cli import assert_gradients_healthy, check
from gradcheck_cli.cli.main import app
from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.choices import FindingKind, FixId, Severity
from gradcheck_cli.common.errors import InvalidOptionError
from gradcheck_cli.examine.check_model import check_model
from gradcheck_cli.judge.diagnosis import diagnose
from gradcheck_cli.measure import probe
from gradcheck_cli.measure.fp16_range import FP16_INITIAL_LOSS_SCALE
from gradcheck_cli.measure.placement import Placement, resolve_placement
from gradcheck_cli.measure.probe import probe_model
from gradcheck_cli.render.json import report_to_dict
from gradcheck_cli.scan import scan
from gradcheck_cli.trials.demo import run_demo
from gradcheck_cli.trials.presets import DemoSpec

runner = CliRunner()


def sigmoid_mlp(depth: int = 8, width: int = 32) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [m for _ in range(depth) for m in (nn.Linear(width, width), nn.Sigmoid())]
    return nn.Sequential(*layers, nn.Linear(width, 4))


def batches(width: int = 32):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, width, generator=g), torch.randint(4, (16,), generator=g)
    return lambda index: Batch(args=(x,), target=y)


def cross_entropy(output, batch):
    return nn.functional.cross_entropy(output.float(), batch.target)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_passes_measure_what_full_precision_measures(dtype):
    model = sigmoid_mlp()
    full = probe_model(model, batches(), cross_entropy)
    mixed = probe_model(model, batches(), cross_entropy, placement=Placement(amp=dtype))
    assert mixed.amp == str(dtype).removeprefix("torch.")
    # The loss scale is divided out: figures agree with full precision to the dtype's few digits.
    for a, b in zip(full.layers, mixed.layers):
        assert b.backward == pytest.approx(a.backward, rel=0.05)
        assert b.weight_grad_norm == pytest.approx(a.weight_grad_norm, rel=0.05)
        assert 0.0 <= b.fp16_underflow <= 1.0 and b.fp16_overflow == 0.0
    assert all(layer.fp16_underflow is None for layer in full.layers)
    if dtype is torch.float16:
        assert mixed.loss_scale == FP16_INITIAL_LOSS_SCALE  # nothing overflowed at GradScaler's start
    else:
        assert mixed.loss_scale == 1.0


def test_fp16_range_counts_are_exact_on_a_known_gradient():
    # loss = sum(out * C): the gradient at the layer's output is C itself, whatever the weights.
    values = torch.tensor([0.0, 1e-7, -3e-5, 1e-3, 0.5, 2.0, -7e4, 1e5])
    weights = values.repeat(4, 1)

    def loss(output, batch):
        return (output.float() * weights).sum()

    model = nn.Linear(8, 8)
    result = probe_model(
        model, lambda i: Batch(args=(torch.randn(4, 8),)), loss, passes=2, placement=Placement(amp=torch.bfloat16)
    )
    (layer,) = result.layers
    assert layer.fp16_underflow == pytest.approx(2 / 8)  # 1e-7 and 3e-5; the exact zero is not underflow
    assert layer.fp16_overflow == pytest.approx(2 / 8)  # 7e4 and 1e5


def test_fp16_range_shares_leave_nan_elements_out():
    # NaN is neither below fp16's smallest normal nor above its largest: out of both shares and of the count
    # (non-finite gradients are reported on their own).
    values = torch.tensor([0.0, 1e-7, -3e-5, 1e-3, 0.5, 2.0, -7e4, math.nan])
    weights = values.repeat(4, 1)

    def loss(output, batch):
        return (output.float() * weights).sum()

    result = probe_model(
        nn.Linear(8, 8),
        lambda i: Batch(args=(torch.randn(4, 8),)),
        loss,
        passes=1,
        placement=Placement(amp=torch.bfloat16),
    )
    (layer,) = result.layers
    assert layer.fp16_underflow == pytest.approx(2 / 7)
    assert layer.fp16_overflow == pytest.approx(1 / 7)
    assert layer.backward_nonfinite


def test_fp16_passes_halve_the_loss_scale_until_the_gradients_fit():
    # Every gradient element is 1.5 (at the output; the weight's too, with inputs of 1/4 over a batch of 4):
    # 1.5 * 2^16 overflows fp16 (65504), 1.5 * 2^15 does not.
    model = nn.Linear(8, 8, bias=False)  # a bias would sum the batch's gradients: 6

    def loss(output, batch):
        return output.float().sum() * 1.5

    result = probe_model(
        model, lambda i: Batch(args=(torch.full((4, 8), 0.25),)), loss, placement=Placement(amp=torch.float16)
    )
    assert result.loss_scale == FP16_INITIAL_LOSS_SCALE / 2
    (layer,) = result.layers
    # per-sample RMS of the output gradient: sqrt(B * sum of squares) = sqrt(4 * 32 * 1.5^2), unscaled
    assert layer.backward == pytest.approx(math.sqrt(4 * 32) * 1.5, rel=1e-3)
    assert layer.weight_grad_norm == pytest.approx(math.sqrt(64) * 1.5, rel=1e-3)
    assert not layer.nonfinite


def test_fp16_findings_suggest_a_loss_scale_or_bf16():
    model = sigmoid_mlp(depth=12)
    result = probe_model(model, batches(), cross_entropy, placement=Placement(amp=torch.float16))
    findings = [f for f in diagnose(result).findings if f.kind is FindingKind.FP16_RANGE]
    assert len(findings) == 1 and findings[0].severity is Severity.WARNING
    (fix,) = findings[0].fixes
    assert fix.id == FixId.LOSS_SCALING.value and "GradScaler(init_scale=2.0**16)" in fix.code
    result = probe_model(model, batches(), cross_entropy, placement=Placement(amp=torch.bfloat16))
    (finding,) = [f for f in diagnose(result).findings if f.kind is FindingKind.FP16_RANGE]
    assert finding.severity is Severity.INFO and "bf16 holds them" in finding.message


def test_one_host_transfer_per_pass_with_amp(monkeypatch):
    calls = {"tolist": 0, "item": 0}
    tolist, item = torch.Tensor.tolist, torch.Tensor.item
    monkeypatch.setattr(
        torch.Tensor, "tolist", lambda self: calls.__setitem__("tolist", calls["tolist"] + 1) or tolist(self)
    )
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.__setitem__("item", calls["item"] + 1) or item(self))
    probe_model(sigmoid_mlp(), batches(), cross_entropy, passes=3, placement=Placement(amp=torch.bfloat16))
    assert calls["item"] == 0
    assert calls["tolist"] == 3 + 1 + 1  # one per pass, the weight figures and the activation sites


def test_probe_calls_no_op_that_reads_back_on_cuda(monkeypatch):
    """The CPU's stand-in for the CUDA test below: ops that read a value back to the host on CUDA before
    they can run (bincount, nonzero, unique, masked_select, repeat_interleave without its output size,
    a tensor's truth value) are not called while probing, on the per-layer path or off it."""

    def refuse(name):
        def call(*args, **kwargs):
            raise AssertionError(f"{name} reads back to the host on CUDA")

        return call

    for name in ("bincount", "nonzero", "unique", "masked_select"):
        monkeypatch.setattr(torch, name, refuse(f"torch.{name}"))
        monkeypatch.setattr(torch.Tensor, name, refuse(f"Tensor.{name}"))
    monkeypatch.setattr(torch.Tensor, "__bool__", refuse("a tensor's truth value"))
    repeat_interleave = torch.repeat_interleave

    def sized_repeat_interleave(*args, **kwargs):
        assert "output_size" in kwargs or not isinstance(args[1] if len(args) > 1 else None, torch.Tensor)
        return repeat_interleave(*args, **kwargs)

    monkeypatch.setattr(torch, "repeat_interleave", sized_repeat_interleave)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 4))
    result = probe_model(model, batches(), cross_entropy, passes=3, placement=Placement(amp=torch.bfloat16))
    assert [a.type for a in result.activations] == ["ReLU", "Sigmoid"]
    assert all(layer.fp16_underflow is not None for layer in result.layers)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_syncs_do_not_grow_with_depth():
    """With torch.cuda.set_sync_debug_mode each synchronizing call warns: a probe under fp16 autocast makes a
    fixed number (one transfer per pass, a few copies of small tables), whatever the model's depth. A sync
    per layer (torch.bincount, .item()) would add one per layer and pass."""

    def syncs(depth: int) -> int:
        torch.manual_seed(0)
        layers = [m for _ in range(depth) for m in (nn.Linear(32, 32), nn.ReLU())]
        model = nn.Sequential(*layers, nn.Linear(32, 4)).cuda()
        for module in model:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")  # healthy: no norm leaves float32
        x, y = torch.randn(16, 32, device="cuda"), torch.randint(4, (16,), device="cuda")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            placed = Placement(torch.device("cuda"), torch.float16)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                probe_model(model, lambda i: Batch(args=(x,), target=y), cross_entropy, passes=3, placement=placed)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(16) == syncs(4)


def test_device_cuda_without_cuda_is_one_sentence(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidOptionError, match="torch sees no CUDA device"):
        resolve_placement("cuda")
    assert resolve_placement("auto") == Placement(torch.device("cpu"), None)
    result = runner.invoke(app, ["demo", "--depth", "3", "--device", "cuda"])
    assert result.exit_code == 2
    assert "use --device cpu" in result.output and "Traceback" not in result.output


def test_cli_amp_reaches_the_json_report():
    result = runner.invoke(app, ["demo", "--depth", "6", "--width", "32", "--amp", "bf16", "--device", "cpu",
                                 "--format", "json", "--no-fix"])  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.stdout)
    assert report["model"]["amp"] == "bfloat16" and report["model"]["loss_scale"] == 1.0
    assert all(0.0 <= layer["fp16_underflow"] <= 1.0 for layer in report["layers"])


# Placement passed explicitly through the Python API (issue 24): check(), check_model and every copy they measure.

CPU_BF16 = Placement(torch.device("cpu"), torch.bfloat16)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def figures(report) -> list[tuple]:
    return [
        (layer.name, layer.backward, layer.weight_grad_norm, layer.fp16_underflow) for layer in report.result.layers
    ]


def zero_head_mlp() -> nn.Sequential:
    """A zero-initialized head: the layers behind it get no gradient until a step moves it (zero_init.py)."""
    model = sigmoid_mlp(depth=3)
    nn.init.zeros_(model[-1].weight)
    return model


def test_check_with_amp_measures_what_check_model_measures_under_that_placement():
    model = sigmoid_mlp()
    x = batches()(0).args[0]

    def loss(output, inputs):
        return output.float().pow(2).mean()

    report = check(model, x, loss_fn=loss, amp="bf16")
    assert report.result.amp == "bfloat16"
    expected = check_model(model, lambda i: Batch(args=(x,), size=16), loss, placement=Placement(amp=torch.bfloat16))
    assert figures(report) == figures(expected)
    # without amp: full precision, as before the argument existed
    plain = check(model, x, loss_fn=loss)
    assert plain.result.amp is None and figures(plain) == figures(
        check_model(model, lambda i: Batch(args=(x,), size=16), loss)
    )


def test_check_never_moves_a_users_module_and_moves_the_model_it_loads(monkeypatch):
    moved = []
    monkeypatch.setattr(scan, "move_to_placement", lambda model, placement: moved.append(placement))
    check(sigmoid_mlp(depth=2), torch.randn(4, 32), device="cpu", passes=1)
    assert moved == []
    check(EXAMPLES / "vanishing_mlp.py", device="cpu", amp="bf16", passes=1)
    assert moved == [CPU_BF16]


def test_check_with_amp_reaches_the_zero_init_steps_the_training_steps_and_the_fix_trials(monkeypatch):
    seen = []
    real = probe.probe_model  # what zero_init.settle_chain imports when it probes its stepped copies

    def recording(*args, placement, **kwargs):
        seen.append(placement)
        return real(*args, placement=placement, **kwargs)

    monkeypatch.setattr(probe, "probe_model", recording)
    check(zero_head_mlp(), batches()(0).args[0], amp="bf16", passes=1)
    assert seen and all(placement.amp is torch.bfloat16 for placement in seen)  # the zero-init check's copies
    report = check(sigmoid_mlp(depth=12), batches()(0).args[0], amp="bf16", steps=1, verify=True, passes=1)
    assert [step.report.result.amp for step in report.training] == ["bfloat16", "bfloat16"]
    measured = [trial.report for trial in report.fix_trials if trial.report is not None]
    assert measured and all(trial.result.amp == "bfloat16" for trial in measured)


def test_run_demo_builds_and_measures_every_preset_under_its_placement():
    report = run_demo(DemoSpec(depth=4, width=16), passes=1, steps=1, verify=True, placement=CPU_BF16)
    reports = [report, *(step.report for step in report.training), *(t.report for t in report.fix_trials if t.report)]
    assert len(reports) > 3 and all(r.result.amp == "bfloat16" for r in reports)


def test_the_api_gives_the_figures_the_cli_gives_on_the_cpu_with_bf16():
    result = runner.invoke(app, ["demo", "--depth", "6", "--width", "32", "--amp", "bf16", "--device", "cpu",
                                 "--format", "json", "--no-fix"])  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    cli_layers = json.loads(result.stdout)["layers"]
    report = run_demo(DemoSpec(depth=6, width=32), try_fix=False, placement=CPU_BF16)
    assert json.loads(json.dumps(report_to_dict(report)))["layers"] == cli_layers


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"device": "tpu"}, "device must be one of auto, cpu, cuda, not 'tpu'"),
        ({"amp": "fp8"}, "amp must be one of bf16, fp16, not 'fp8'"),
        ({"amp": torch.bfloat16}, "amp must be one of bf16, fp16"),
    ],
)
def test_check_refuses_a_device_or_amp_that_is_not_a_choice(arguments, message):
    with pytest.raises(ValueError, match=message):
        check(nn.Linear(2, 2), torch.randn(2, 2), **arguments)


def test_check_refuses_cuda_without_cuda_in_one_sentence_in_the_apis_words(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^device='cuda': torch sees no CUDA device .*use device='cpu', or auto$"):
        assert_gradients_healthy(nn.Linear(2, 2), torch.randn(2, 2), device="cuda")
    assert check(nn.Linear(2, 2), torch.randn(2, 2), device="auto", passes=1).result.amp is None
