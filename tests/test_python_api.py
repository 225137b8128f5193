"""The Python API (check, assert_gradients_healthy) and the pytest plugin's `gradcheck` fixture."""

import pytest
import torch
from torch import nn

import gradcheck_cli
from gradcheck_cli import assert_gradients_healthy, check
from gradcheck_cli.common.choices import LayerStatus, Verdict

pytest_plugins = ["pytester"]


def sigmoid_mlp(depth=20, width=32):
    torch.manual_seed(0)
    layers = [m for _ in range(depth) for m in (nn.Linear(width, width), nn.Sigmoid())]
    return nn.Sequential(*layers, nn.Linear(width, 3))


def relu_he_mlp(depth=8, width=32):
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        linear = nn.Linear(width, width)
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 3))


def test_check_a_model_with_inputs_reports_where_the_inputs_came_from():
    report = check(sigmoid_mlp(), torch.randn(8, 32))
    assert report.verdict is Verdict.VANISHING
    assert dict(report.context)["inputs"] == "the inputs given to check(): (8, 32) float32"


def test_check_infers_inputs_and_accepts_a_function_and_a_loss_fn():
    assert check(relu_he_mlp()).verdict is Verdict.HEALTHY  # inputs inferred from the first Linear
    calls = []

    def inputs():
        calls.append(1)
        return torch.randn(4, 32)

    report = check(relu_he_mlp(), inputs, loss_fn=lambda output, batch: output.pow(2).mean())
    assert len(calls) >= 3  # once to describe the shapes, then once per pass
    assert dict(report.context)["loss"].startswith("the file's") or "loss_fn" in dict(report.context)["loss"]


def test_check_a_target_path_and_thresholds():
    report = check("examples/vanishing_mlp.py")
    assert report.verdict is Verdict.VANISHING and report.target == "examples/vanishing_mlp.py"
    lenient = check(sigmoid_mlp(depth=6), torch.randn(8, 32), decades_warning=50.0, decades_error=60.0)
    assert lenient.verdict is Verdict.HEALTHY


def test_check_rejects_an_unknown_threshold():
    with pytest.raises(TypeError, match="unknown threshold.*decade_error"):
        check(relu_he_mlp(), torch.randn(4, 32), decade_error=3.0)


def test_check_ignores_layers_by_glob():
    report = check(sigmoid_mlp(depth=6), torch.randn(8, 32), ignore=["0", "2"])
    assert report.diagnosis.statuses["0"] is LayerStatus.IGNORED
    assert report.diagnosis.statuses["4"] is not LayerStatus.IGNORED


def test_assert_gradients_healthy_passes_a_healthy_model_and_leaves_it_as_found():
    model = relu_he_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    report = assert_gradients_healthy(model, torch.randn(8, 32))
    assert report.verdict is Verdict.HEALTHY
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_assert_gradients_healthy_fails_with_the_condensed_report():
    with pytest.raises(AssertionError) as failure:
        assert_gradients_healthy(sigmoid_mlp(), torch.randn(8, 32))
    message = str(failure.value)
    assert message.startswith("gradients are not healthy:")
    assert "VANISHING" in message and "vanishing_gradient" in message and "\x1b[" not in message


def test_assert_gradients_healthy_fail_on_warning_is_stricter():
    model = sigmoid_mlp(depth=3)  # about one decade: a warning at most
    report = check(model, torch.randn(8, 32))
    assert report.verdict is Verdict.HEALTHY
    if report.diagnosis.findings:
        with pytest.raises(AssertionError):
            assert_gradients_healthy(model, torch.randn(8, 32), fail_on="warning")
    assert_gradients_healthy(model, torch.randn(8, 32), fail_on="never")


def test_public_names_resolve_lazily():
    assert gradcheck_cli.check is check
    assert gradcheck_cli.assert_gradients_healthy is assert_gradients_healthy


def test_pytest_plugin_fixture(pytester):
    pytester.makepyfile(
        """
        import torch
        from torch import nn

        def test_healthy(gradcheck):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
            report = gradcheck.assert_healthy(model, torch.randn(4, 8))
            assert report.verdict.value == "healthy"

        def test_vanishing(gradcheck):
            torch.manual_seed(0)
            layers = [m for _ in range(20) for m in (nn.Linear(16, 16), nn.Sigmoid())]
            gradcheck.assert_healthy(nn.Sequential(*layers, nn.Linear(16, 2)), torch.randn(8, 16))
        """
    )
    result = pytester.runpytest_subprocess("-q")  # the fixture comes from the pytest11 entry point
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*gradients are not healthy*", "*VANISHING*"])
