"""Every configuration in the foundation issue's table must come out as stated (depth 50, seed 0)."""

import io

import pytest

from gradcheck_cli.common.choices import (
    Activation,
    Arch,
    FindingKind,
    Init,
    Norm,
    OutputFormat,
    Severity,
    TrialOutcome,
    Verdict,
)
from gradcheck_cli.common.errors import InvalidOptionError
from gradcheck_cli.render.interface import RenderOptions, get_renderer
from gradcheck_cli.trials.demo import describe_change, run_demo
from gradcheck_cli.trials.presets import DemoSpec, build_preset

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
        (DemoSpec(arch=Arch.RNN, norm=Norm.LAYER), "not to recurrent presets"),
        (DemoSpec(arch=Arch.LSTM, residual=True), "needs --depth 2 or more"),
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


# The demo's --arch rnn|lstm --depth N at its default size (width 128, 50 steps), issue 22 (4): (arch, depth, the
# fixes tried in order until one cured). A stack is measured per layer: depth and time are judged apart, so the
# 4- and 8-layer LSTMs lose 2 and 4 decades through depth, and every layer's gradient through time vanishes.
RECURRENT_DEMOS = [
    (Arch.LSTM, 1, ["init"]),
    (Arch.LSTM, 4, ["residual", "init"]),  # residual connections remove the depth loss, the forget bias both
    (Arch.LSTM, 8, ["residual", "init"]),
    (Arch.RNN, 1, ["lstm"]),
    (Arch.RNN, 4, ["lstm"]),
    (Arch.RNN, 8, ["lstm"]),
]


def assert_trials_tell_the_truth(report):
    """No fix is shown as a cure unless its verdict is healthy; a fix tried before the cure did not cure."""
    for trial in report.fix_trials:
        assert (trial.outcome is TrialOutcome.CURED) == (trial.report.verdict is Verdict.HEALTHY)
        if trial.report.verdict is not report.verdict and trial.report.verdict is not Verdict.HEALTHY:
            assert trial.outcome is TrialOutcome.WORSE  # vanishing <-> exploding is worse, however the trend moved
    assert report.fix_trials_until_cured
    assert all(trial.outcome is not TrialOutcome.CURED for trial in report.fix_trials[:-1])


@pytest.mark.parametrize(
    ("arch", "depth", "tried"), RECURRENT_DEMOS, ids=[f"{a.value}-{d}" for a, d, _ in RECURRENT_DEMOS]
)
def test_recurrent_demo_verdicts_and_the_first_fix_that_cures(arch, depth, tried):
    report = run_demo(DemoSpec(arch=arch, depth=depth), passes=1)
    assert report.verdict is Verdict.VANISHING
    assert len(report.result.layers) == depth + 1  # each stacked layer is a row, and the head
    assert [trial.fix_id for trial in report.fix_trials] == tried
    assert report.fix_trials[-1].outcome is TrialOutcome.CURED
    assert_trials_tell_the_truth(report)


def test_a_small_4_layer_lstm_tries_residual_connections_then_the_forget_bias_which_cures():
    """The same, small enough for the default run: the depth finding's fix first (residual connections between
    the layers: the depth loss goes, each layer's loss through time stays: helped), then the forget bias: cured."""
    report = run_demo(DemoSpec(arch=Arch.LSTM, depth=4, width=32, seq_len=20), passes=1)
    kinds = {finding.kind for finding in report.diagnosis.findings if finding.severity is Severity.ERROR}
    assert kinds == {FindingKind.VANISHING_GRADIENT, FindingKind.VANISHING_THROUGH_TIME}
    residual, forget_bias = report.fix_trials
    assert (residual.fix_id, residual.outcome, residual.description) == (
        "residual",
        TrialOutcome.HELPED,
        "residual: False -> True",
    )
    assert abs(residual.report.diagnosis.profile.decades) < 1  # no loss through depth left
    assert (forget_bias.fix_id, forget_bias.outcome) == ("init", TrialOutcome.CURED)
    assert_trials_tell_the_truth(report)
    text = render_text(report)
    assert "The suggested fixes, tried in order until one cures" in text
    assert text.index("1. residual, applied to a copy") < text.index("Before -> after (helped)")
    assert text.index("2. init, applied to a copy: forget bias: default -> 2.94") < text.index("(cured)")
    assert "The first that cured: init." in text and "(--verify)" not in text
    report.fix_trials = [residual, residual]  # none of the fixes tried cures: said once, after them all
    text = render_text(report)
    assert "None of the 2 fixes tried cured it." in text and "No fix tried cured it." not in text


def render_text(report) -> str:
    stream = io.StringIO()
    get_renderer(OutputFormat.TEXT).render(report, stream, RenderOptions(width=100, color=False))
    return stream.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("arch", [Arch.LSTM, Arch.RNN])
def test_50_stacked_layers_vanish_through_depth_and_no_single_fix_cures(arch):
    """Before issue 22 the 50-layer LSTM read EXPLODING +14.2 through time (the gradient at the last step's input
    had crossed the 50 layers straight down) and the 50-layer RNN +2.1; its "fixes" made that +19.9 and +8.2."""
    report = run_demo(DemoSpec(arch=arch, depth=50), passes=1)
    assert report.verdict is Verdict.VANISHING
    assert len(report.result.layers) == 51
    depth = next(f for f in report.diagnosis.findings if f.kind is FindingKind.VANISHING_GRADIENT)
    assert depth.severity is Severity.ERROR and depth.evidence["decades"] < -5
    assert not any(t.decades > 0 and abs(t.decades) >= 1 for t in report.diagnosis.time_profiles)
    assert report.fix_trials and all(trial.outcome is not TrialOutcome.CURED for trial in report.fix_trials)
    assert_trials_tell_the_truth(report)
