"""precision.py on its own: which slots go to float64, and when a pass is run again (PassPlan)."""

import math

from gradcheck_cli.measure.layer_figures import SIGNAL_BACKWARD, SIGNAL_FORWARD
from gradcheck_cli.measure.pass_figures import PassFigures
from gradcheck_cli.measure.precision import PassPlan, float64_slots


def figures(forward_sq, backward_sq, *, exact=True, loss=1.0):
    n = len(forward_sq)
    return PassFigures(
        forward_sq, [1] * n, backward_sq, [True] * n, [None] * n, [None] * n, [False] * n, {}, loss, None, 1, exact
    )


def test_slots_outside_the_safe_range_go_to_float64():
    assert float64_slots(figures([1.0, 1e-20], [1e30, 1.0]), 1.0) == {(SIGNAL_FORWARD, 1), (SIGNAL_BACKWARD, 0)}


def test_the_loss_scale_is_divided_out_of_the_backward_slots():
    # a backward sum of squares of 1e-20 seen through a loss scale of 2**16 is in range
    assert float64_slots(figures([1.0], [1e-20 * 2.0**32]), 2.0**16) == set()
    assert float64_slots(figures([1.0], [1e-20 * 2.0**32]), 1.0) == set()
    assert float64_slots(figures([1.0], [1e-20]), 1.0) == {(SIGNAL_BACKWARD, 0)}


def test_an_exact_pass_stands():
    plan = PassPlan()
    assert plan.settled(figures([1.0], [1.0]))


def test_an_inexact_pass_is_measured_again_once_keeping_its_figures():
    plan = PassPlan()
    inexact = figures([1.0], [1.0], exact=False)
    assert not plan.settled(inexact) and plan.remeasure is inexact
    assert plan.settled(figures([1.0], [1.0], exact=False))  # the second measurement stands, exact or not
    plan.new_batch()
    assert plan.remeasure is None


def test_an_fp16_overflow_halves_the_loss_scale_until_the_figures_are_finite():
    plan = PassPlan(2.0**16)
    overflow = figures([1.0], [math.inf])
    assert not plan.settled(overflow) and plan.loss_scale == 2.0**15 and plan.remeasure is None
    assert plan.settled(figures([1.0], [1.0]))
    # a non-finite loss is the model's, not the scale's: it stands
    assert PassPlan(2.0**16).settled(figures([1.0], [math.inf], loss=math.nan))
    # at scale 1 there is nothing left to halve
    assert PassPlan(1.0).settled(overflow)
