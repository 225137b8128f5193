"""The judgement layer as pure functions: synthetic measurements in, findings out."""

import math

import pytest

from gradcheck_cli.common.choices import FindingKind, LayerStatus, Severity, Verdict
from gradcheck_cli.common.stats import LayerStats, RecurrentStats
from gradcheck_cli.judge.depth_trend import theil_sen_slope
from gradcheck_cli.judge.diagnosis import Thresholds, diagnose
from tests.synthetic import geometric_result


def kinds(diagnosis):
    return [(f.kind, f.severity) for f in diagnosis.findings]


def fix_ids(finding):
    return [fix.id for fix in finding.fixes]


def test_theil_sen_ignores_an_outlier():
    xs = [float(i) for i in range(10)]
    ys = [2.0 * x + 1 for x in xs]
    ys[4] = 100.0
    assert theil_sen_slope(xs, ys) == pytest.approx(2.0)


def test_flat_profile_is_healthy():
    diagnosis = diagnose(geometric_result(gain=1.0))
    assert diagnosis.verdict is Verdict.HEALTHY
    assert diagnosis.findings == []
    assert diagnosis.profile.decades == pytest.approx(0.0, abs=1e-9)
    assert all(s is LayerStatus.OK for s in diagnosis.statuses.values())


def test_vanishing_profile_measures_decades_and_gain():
    diagnosis = diagnose(geometric_result(depth=30, gain=0.5))
    assert diagnosis.verdict is Verdict.VANISHING
    assert diagnosis.profile.gain_per_layer == pytest.approx(0.5)
    # D is the paired slope over the trend's length: 29 steps between the 30 trend layers (the head is left out)
    assert diagnosis.profile.decades == pytest.approx(29 * math.log10(0.5))
    assert diagnosis.profile.depth_scale == pytest.approx(1 / math.log(2))
    (finding,) = diagnosis.findings
    assert finding.kind is FindingKind.VANISHING_GRADIENT and finding.severity is Severity.ERROR
    assert finding.evidence["gain_per_layer"] == pytest.approx(0.5)
    assert diagnosis.statuses["layers.0"] is LayerStatus.VANISHING
    assert diagnosis.statuses["layers.28"] is LayerStatus.OK


def test_one_decade_is_a_warning_two_an_error():
    warning = diagnose(geometric_result(depth=20, gain=10 ** (-1.5 / 16)))
    assert kinds(warning) == [(FindingKind.VANISHING_GRADIENT, Severity.WARNING)]
    assert warning.verdict is Verdict.HEALTHY  # healthy means no error finding
    assert diagnose(geometric_result(depth=20, gain=10 ** (-0.5 / 16))).findings == []


def test_thresholds_can_be_overridden():
    result = geometric_result(depth=20, gain=10 ** (-1.5 / 16))
    strict = diagnose(result, Thresholds(decades_warning=0.5, decades_error=1.0))
    assert kinds(strict) == [(FindingKind.VANISHING_GRADIENT, Severity.ERROR)]
    with pytest.raises(ValueError):
        Thresholds(decades_warning=3, decades_error=2)


def test_exploding_backward_signal_with_flat_weight_gradients_is_caught():
    """The deep linear net with gain 1.5: weight-gradient norms flat, backward signal x1.5 per layer."""
    result = geometric_result(depth=50, gain=1.5, forward_gain=1.5)
    for layer in result.layers:
        layer.weight_grad_norm = layer.grad_norm = 1.0  # flat, as Glorot & Bengio observed
    diagnosis = diagnose(result)
    assert diagnosis.verdict is Verdict.EXPLODING
    finding = diagnosis.findings[0]
    assert finding.kind is FindingKind.EXPLODING_GRADIENT
    assert "forward activations grow" in finding.message
    assert diagnosis.profile.gain_per_layer == pytest.approx(1.5)


def test_normalized_net_without_skips_gets_residual_not_batchnorm():
    result = geometric_result(depth=50, gain=1.2, norms={"BatchNorm1d": 50}, residual=False)
    finding = diagnose(result).findings[0]
    assert finding.kind is FindingKind.EXPLODING_GRADIENT
    assert fix_ids(finding)[0] == "residual"
    assert "batchnorm" not in fix_ids(finding)


def test_saturating_activations_get_relu_first_and_clipping_gets_a_measured_threshold():
    vanishing = diagnose(geometric_result(depth=30, gain=0.25, activations={"Sigmoid": 30}, weight_scale=0.577))
    ids = fix_ids(vanishing.findings[0])
    assert ids[0] == "relu" and "init" in ids and "batchnorm" in ids and "lstm" not in ids
    assert "30 of 30 activations are Sigmoid" in vanishing.findings[0].fixes[0].detail
    exploding = diagnose(geometric_result(depth=30, gain=2.0, weight_scale=3.0))
    clip = next(fix for fix in exploding.findings[0].fixes if fix.id == "clipping")
    assert clip.params["max_norm"] == 2.0  # the median of the measured total norms 1.5, 2.0, 2.5


def test_relu_with_small_init_gets_init_not_relu():
    diagnosis = diagnose(geometric_result(depth=30, gain=0.41, weight_scale=0.577))
    ids = fix_ids(diagnosis.findings[0])
    assert ids[0] == "init" and "relu" not in ids
    assert "He" in diagnosis.findings[0].fixes[0].title


def test_residual_not_suggested_when_the_model_has_skips():
    diagnosis = diagnose(geometric_result(depth=30, gain=0.5, residual=True))
    assert "residual" not in fix_ids(diagnosis.findings[0])


def test_huge_relative_gradient_is_exploding():
    diagnosis = diagnose(geometric_result(relative_grad=1e6))
    assert kinds(diagnosis) == [(FindingKind.LARGE_RELATIVE_GRADIENT, Severity.ERROR)]
    assert diagnosis.verdict is Verdict.EXPLODING
    assert diagnose(geometric_result(relative_grad=500)).findings[0].severity is Severity.WARNING


def test_zero_gradients_below_a_decaying_trend_are_vanishing():
    result = geometric_result(depth=30, gain=0.1)
    for layer in result.layers[:3]:
        layer.backward = layer.weight_grad_norm = layer.grad_norm = 0.0
    diagnosis = diagnose(result)
    assert kinds(diagnosis) == [(FindingKind.VANISHING_GRADIENT, Severity.ERROR)]
    assert diagnosis.profile.zero_layers == ["layers.0", "layers.1", "layers.2"]
    assert diagnosis.statuses["layers.0"] is LayerStatus.ZERO


def test_isolated_zero_gradient_layer_is_its_own_finding():
    result = geometric_result(depth=20)
    result.layers[10].weight_grad_norm = result.layers[10].grad_norm = 0.0
    diagnosis = diagnose(result)
    assert kinds(diagnosis) == [(FindingKind.ZERO_GRADIENT, Severity.ERROR)]
    assert diagnosis.findings[0].layers == ["layers.10"]


def test_one_odd_layer_does_not_flag_a_healthy_profile():
    """Attention query/key projections get tiny gradients at init: not vanishing (GRADIENTS.md)."""
    result = geometric_result(depth=20)
    result.layers[5].backward = 1e-3
    diagnosis = diagnose(result)
    assert diagnosis.findings == [] and diagnosis.statuses["layers.5"] is LayerStatus.OK


def test_nonfinite_names_the_first_layer_in_the_forward_pass():
    result = geometric_result(depth=10)
    for layer in result.layers[4:]:
        layer.forward_nonfinite = True
    result.losses = [float("nan")] * 3
    diagnosis = diagnose(result)
    assert diagnosis.verdict is Verdict.NONFINITE
    finding = diagnosis.findings[0]
    assert finding.kind is FindingKind.NONFINITE
    assert finding.evidence["first_nonfinite_forward"] == "layers.4"
    assert diagnosis.statuses["layers.4"] is LayerStatus.NONFINITE


def test_vanishing_through_time_suggests_lstm_for_a_vanilla_rnn_only():
    rnn = geometric_result(depth=1)
    rnn.recurrent = [RecurrentStats("rnn", "RNN", [0.5 ** (49 - t) for t in range(50)])]
    rnn.structure.activations = {}
    rnn.structure.recurrent = {"RNN(tanh)": 1}
    finding = diagnose(rnn).findings[0]
    assert finding.kind is FindingKind.VANISHING_THROUGH_TIME
    assert fix_ids(finding) == ["lstm"]
    assert finding.fixes[0].params["forget_bias"] == pytest.approx(math.log(49), abs=1e-3)
    lstm = geometric_result(depth=1)
    lstm.recurrent = [RecurrentStats("lstm", "LSTM", [0.5 ** (49 - t) for t in range(50)])]
    finding = diagnose(lstm).findings[0]
    assert fix_ids(finding) == ["init"] and "forget-gate bias" in finding.fixes[0].title
    gru = geometric_result(depth=1)
    gru.recurrent = [RecurrentStats("gru", "GRU", [0.5 ** (49 - t) for t in range(50)])]
    finding = diagnose(gru).findings[0]
    assert fix_ids(finding) == ["init"] and "GRU update-gate bias" in finding.fixes[0].title


def test_shallow_models_have_no_depth_verdict():
    diagnosis = diagnose(geometric_result(depth=2, gain=0.01))
    assert diagnosis.profile.decades is None and diagnosis.verdict is Verdict.HEALTHY


def test_regression_interleaved_layer_types_are_compared_like_with_like():
    """A ResNet's BatchNorm outputs get a gradient a constant factor below its convolutions'; with a conv
    at one end and a BatchNorm at the other, mixing types read that factor as a depth trend (a small
    ResNet got a false exploding warning at 10^+1.04)."""
    result = geometric_result(depth=20)
    layers = []
    for i, linear in enumerate(result.layers[:-1]):
        norm = LayerStats(name=f"norms.{i}", type="BatchNorm1d", calls=1, param_count=32, weight_norm=4.0,
                          weight_grad_norm=0.05, grad_norm=0.05, relative_grad=0.01, backward=0.05, forward_rms=1.0)  # fmt: skip
        layers += [linear, norm] if i < 19 else [norm, linear]
    result.layers = [*layers, result.layers[-1]]
    diagnosis = diagnose(result)
    assert diagnosis.profile.layer_type == "Linear"
    assert diagnosis.profile.decades == pytest.approx(0.0)
    assert diagnosis.findings == []


def test_every_fix_snippet_is_valid_python():
    reports = [
        geometric_result(depth=30, gain=0.25, activations={"Sigmoid": 30}, weight_scale=0.577),
        geometric_result(depth=30, gain=0.25, activations={"Sigmoid": 30}, convolutional=True),
        geometric_result(depth=30, gain=2.0, weight_scale=3.0),
        geometric_result(depth=30, gain=1.2, norms={"BatchNorm1d": 30}),
    ]
    for kind in ("RNN", "LSTM", "GRU"):
        result = geometric_result(depth=1)
        result.recurrent = [RecurrentStats("rnn", kind, [0.5 ** (19 - t) for t in range(20)])]
        reports.append(result)
    rising = geometric_result(depth=1)
    rising.recurrent = [RecurrentStats("rnn", "RNN", [2.0 ** (19 - t) for t in range(20)])]
    reports.append(rising)
    seen = set()
    for result in reports:
        for finding in diagnose(result).findings:
            for fix in finding.fixes:
                compile(fix.code, f"<fix {fix.id}>", "exec")
                seen.add(fix.id)
    assert seen == {"relu", "init", "batchnorm", "residual", "clipping", "lstm"}


def test_regression_the_head_is_not_listed_as_exploding():
    """The head's output gradient is dL/dlogits, naturally above the last hidden layers': it is left out
    of the trend and must not be listed (it was marked `high` in an exploding sigmoid net)."""
    result = geometric_result(depth=30, gain=2.0)
    result.layers[-1].backward = 1e3  # far above the hidden layers' end, where the backward signal is 1
    diagnosis = diagnose(result)
    assert diagnosis.profile.head == "head"
    assert all("head" not in finding.layers for finding in diagnosis.findings)
    assert diagnosis.statuses["head"] is LayerStatus.OK


def test_depth_findings_list_layers_of_every_type():
    result = geometric_result(depth=30, gain=0.5)
    norms = []
    for i, linear in enumerate(result.layers[:-1]):
        norms.append(LayerStats(name=f"norms.{i}", type="BatchNorm1d", calls=1, param_count=32, weight_norm=4.0,
                                grad_norm=0.1, backward=0.1 * linear.backward, forward_rms=1.0))  # fmt: skip
    result.layers = [layer for pair in zip(result.layers[:-1], norms) for layer in pair] + [result.layers[-1]]
    diagnosis = diagnose(result)
    (finding,) = diagnosis.findings
    assert "norms.0" in finding.layers and "layers.0" in finding.layers
    assert diagnosis.statuses["norms.0"] is LayerStatus.VANISHING
