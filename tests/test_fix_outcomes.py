"""Fix trials tell the truth (issue 22): each fix tried on a copy is judged cured, helped, no change or worse,
in the core, and --verify ranks the trials by that outcome."""

import json

import pytest
from typer.testing import CliRunner

from gradcheck_cli.cli.main import app
from gradcheck_cli.common.choices import TrialOutcome, Verdict
from gradcheck_cli.report.report import FixTrial
from gradcheck_cli.trials.demo import run_demo
from gradcheck_cli.trials.presets import DemoSpec
from gradcheck_cli.trials.verify import OUTCOME_DECADES, judge_trials, trial_outcome

V, E, H, N = Verdict.VANISHING, Verdict.EXPLODING, Verdict.HEALTHY, Verdict.NONFINITE


@pytest.mark.parametrize(
    ("before", "before_decades", "after", "after_decades", "expected"),
    [
        (V, -6.0, H, -0.3, TrialOutcome.CURED),
        (E, 4.0, H, None, TrialOutcome.CURED),  # healthy is healthy, whatever was measured
        (V, -6.0, V, -4.5, TrialOutcome.HELPED),
        (V, -6.0, V, -6.0 + OUTCOME_DECADES, TrialOutcome.HELPED),  # exactly one decade counts
        (V, -6.0, V, -5.5, TrialOutcome.NO_CHANGE),
        (E, 3.0, E, 3.9, TrialOutcome.NO_CHANGE),
        (V, -6.0, V, None, TrialOutcome.NO_CHANGE),
        (V, -3.0, V, -4.2, TrialOutcome.WORSE),
        (E, 3.0, E, 4.0, TrialOutcome.WORSE),
        (H, 0.2, V, -2.5, TrialOutcome.WORSE),  # healthy -> unhealthy
        (N, None, V, -3.0, TrialOutcome.HELPED),  # the gradients are numbers again
        (V, -3.0, N, None, TrialOutcome.WORSE),
    ],
)
def test_outcome_of_hand_built_numbers(before, before_decades, after, after_decades, expected):
    assert trial_outcome(before, before_decades, after, after_decades) is expected


def test_direction_flip_is_worse_even_when_the_trend_shrinks():
    # vanishing -6.85 -> exploding +3.37 (the LSTM forget-bias case): |decades| shrank by 3.5, yet the
    # gradients now blow up instead of dying out
    assert trial_outcome(V, -6.85, E, 3.37) is TrialOutcome.WORSE
    assert trial_outcome(E, 5.0, V, -2.1) is TrialOutcome.WORSE


def test_trials_ranked_by_outcome_ties_in_order_not_applied_last():
    report = run_demo(DemoSpec(), verify=True, passes=1)  # sigmoid MLP: three fixes cure, init only helps
    outcomes = [trial.outcome for trial in report.fix_trials]
    ranks = [len(TrialOutcome) if o is None else o.rank for o in outcomes]
    assert ranks == sorted(ranks)
    assert outcomes[0] is TrialOutcome.CURED
    # judge_trials sorts stably: equal outcomes keep the order they came in
    measured = [t for t in report.fix_trials if t.report is not None]
    not_applied = FixTrial("x", "it needs a change of the forward code", None)
    again = judge_trials(report, [not_applied, *reversed(measured)])
    assert again[-1] is not_applied and not_applied.outcome is None
    cured = [t.fix_id for t in again if t.outcome is TrialOutcome.CURED]
    assert cured == [t.fix_id for t in reversed(measured) if t.outcome is TrialOutcome.CURED]


def test_lstm_forget_bias_fix_at_depth_4_cures_once_depth_and_time_are_measured_apart():
    """Regression (issue 22): measured as one module, the 4-layer LSTM's forget-bias fix read as vanishing -6.85 ->
    exploding +3.37 through time, shown unjudged: the gradient at the last step's input had crossed the 4 layers
    straight down. Each layer measured on its own, the fix cures; residual connections remove the depth loss only."""
    env = {"COLUMNS": "80", "NO_COLOR": "1"}
    args = ["demo", "--arch", "lstm", "--depth", "4", "--passes", "1", "--verify"]
    data = json.loads(CliRunner().invoke(app, [*args, "--format", "json"], env=env).stdout)
    outcomes = [(t["fix_id"], t["report"]["verdict"], t["outcome"]) for t in data["fix_trials"]]
    assert data["verdict"] == "vanishing"
    assert outcomes == [("init", "healthy", "cured"), ("residual", "vanishing", "helped")]  # ranked: cured first
    assert all(not (t["decades"] > 1) for t in data["time_profiles"])
