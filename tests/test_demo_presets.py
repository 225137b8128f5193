"""Every configuration in the foundation issue's table must come out as stated (depth 50, seed 0)."""

import pytest

from gradcheck_cli.choices import Activation, Arch, FindingKind, Init, Norm, Severity, Verdict
from gradcheck_cli.demo import describe_change, run_demo
from gradcheck_cli.errors import InvalidOptionError
from gradcheck_cli.presets import DemoSpec, build_preset

TABLE = [
    ("mlp-sigmoid-default", DemoSpec(activation=Activation.SIGMOID), Verdict.VANISHING),
    ("mlp-tanh-default", DemoSpec(activation=Activation.TANH), Verdict.VANISHING),
    ("mlp-relu-he", DemoSpec(activation=Activation.RELU, init=Init.KAIMING), Verdict.HEALTHY),
    ("mlp-relu-default", DemoSpec(activation=Activation.RELU), Verdict.VANISHING),
    (
        "mlp-identity-normal-1.5",
        DemoSpec(activation=Activation.IDENTITY, init=Init.NORMAL, gain=1.5),
        Verdict.EXPLODING,
    ),
    ("mlp-relu-batchnorm", DemoSpec(activation=Activation.RELU, norm=Norm.BATCH), Verdict.EXPLODING),
    (
        "mlp-relu-batchnorm-residual",
        DemoSpec(activation=Activation.RELU, norm=Norm.BATCH, residual=True),
        Verdict.HEALTHY,
    ),
    ("cnn-sigmoid-default", DemoSpec(arch=Arch.CNN), Verdict.VANISHING),
    (
        "cnn-relu-batchnorm-residual",
        DemoSpec(arch=Arch.CNN, activation=Activation.RELU, norm=Norm.BATCH, residual=True),
        Verdict.HEALTHY,
    ),
]


@pytest.mark.parametrize("spec, verdict", [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_table_row(spec, verdict):
    spec = DemoSpec(**{**spec.__dict__, "depth": 50})
    assert 128 <= spec.resolved().width <= 256  # the widths the table was stated for
    report = run_demo(spec, seed=0, try_fix=False)
    assert report.verdict is verdict
    if verdict is Verdict.HEALTHY:
        assert not any(f.severity is Severity.ERROR for f in report.diagnosis.findings)


def test_identity_gain_1_5_explodes_in_the_backward_signal_while_weight_gradients_stay_flat():
    report = run_demo(DemoSpec(activation=Activation.IDENTITY, init=Init.NORMAL, gain=1.5), try_fix=False)
    hidden = report.result.layers[:-1]
    weight_grads = [layer.weight_grad_norm for layer in hidden]
    assert max(weight_grads) / min(weight_grads) < 5  # nearly equal in every layer...
    assert report.diagnosis.profile.gain_per_layer == pytest.approx(1.5, rel=0.05)  # ...signal x1.5 per layer
    assert report.diagnosis.findings[0].kind is FindingKind.EXPLODING_GRADIENT


def test_default_demo_shows_the_fix_curing_the_vanishing():
    report = run_demo(DemoSpec())
    assert report.verdict is Verdict.VANISHING
    (trial,) = report.fix_trials
    assert trial is not None and trial.fix_id == "relu"
    assert trial.report.verdict is Verdict.HEALTHY
    assert trial.description == "activation: sigmoid -> relu, init: default -> kaiming"


def test_batchnorm_without_skips_is_cured_by_residual():
    report = run_demo(DemoSpec(activation=Activation.RELU, norm=Norm.BATCH, depth=30))
    assert report.fix_trials[0].fix_id == "residual"
    assert report.fix_trials[0].report.verdict is Verdict.HEALTHY


def test_rnn_gradient_vanishes_through_time_and_lstm_with_forget_bias_keeps_it():
    report = run_demo(DemoSpec(arch=Arch.RNN, seq_len=40, width=64))
    (profile,) = report.diagnosis.time_profiles
    assert profile.decades < -5
    assert report.diagnosis.findings[0].kind is FindingKind.VANISHING_THROUGH_TIME
    assert report.fix_trials[0].fix_id == "lstm"
    (after,) = report.fix_trials[0].report.diagnosis.time_profiles
    assert abs(after.decades) < 1 and report.fix_trials[0].report.verdict is Verdict.HEALTHY


def test_default_lstm_vanishes_and_chrono_forget_bias_cures_it():
    report = run_demo(DemoSpec(arch=Arch.LSTM, seq_len=40, width=64))
    assert report.verdict is Verdict.VANISHING
    assert report.fix_trials[0].fix_id == "init"
    assert "forget bias: default -> 3.66" in report.fix_trials[0].description
    assert report.fix_trials[0].report.verdict is Verdict.HEALTHY


def test_presets_are_deterministic_in_the_seed():
    a = build_preset(DemoSpec(depth=3, width=8), seed=1).model.state_dict()
    b = build_preset(DemoSpec(depth=3, width=8), seed=1).model.state_dict()
    c = build_preset(DemoSpec(depth=3, width=8), seed=2).model.state_dict()
    assert all((a[k] == b[k]).all() for k in a)
    assert any((a[k] != c[k]).any() for k in a)


@pytest.mark.parametrize(
    "spec, message",
    [
        (DemoSpec(init=Init.KAIMING, gain=2.0), "--gain applies to --init normal, xavier or orthogonal"),
        (DemoSpec(arch=Arch.RNN, activation=Activation.SIGMOID), "nn.RNN supports --activation tanh or relu"),
        (DemoSpec(arch=Arch.LSTM, activation=Activation.RELU), "drop --activation"),
        (DemoSpec(arch=Arch.RNN, residual=True), "not to recurrent presets"),
        (DemoSpec(norm=Norm.BATCH, batch_size=1), "BatchNorm in training mode needs a batch of more than one"),
    ],
)
def test_impossible_presets_are_refused(spec, message):
    with pytest.raises(InvalidOptionError, match=message):
        spec.resolved()


def test_describe_change_lists_only_changed_fields():
    before = DemoSpec().resolved()
    after = DemoSpec(norm=Norm.BATCH).resolved()
    assert describe_change(before, after) == "norm: none -> batch"
