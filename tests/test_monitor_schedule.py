"""The monitor's step schedule (monitor/schedule.py) on its own: which steps are sampled, which take every norm,
and the stride norms_every="auto" chooses from the timings it is given."""

import pytest

from gradcheck_cli.monitor.schedule import AUTO_WINDOW, NormSchedule


def timed(schedule: NormSchedule, step_seconds: float, norm_seconds: float, watch_seconds: float = 0.0) -> None:
    """Feed a schedule the timings of AUTO_WINDOW steps that took every norm (and of as many that took the watch)."""
    now = 0.0
    for _ in range(AUTO_WINDOW):
        schedule.entered(now)
        schedule.add_cost(False, watch_seconds)
        schedule.add_cost(True, norm_seconds)
        now += norm_seconds
        schedule.left(now)
        now += step_seconds


def test_sampled_steps_count_from_the_start_step():
    schedule = NormSchedule(every=5, norms_every=1, start_step=1001, has_watch=False)
    assert [step for step in range(1001, 1013) if schedule.sampled(step)] == [1001, 1006, 1011]


def test_a_fixed_norms_every_takes_every_norm_every_nth_step_and_the_watch_between():
    schedule = NormSchedule(every=10, norms_every=4, start_step=1, has_watch=True)
    assert schedule.watching and not schedule.auto and schedule.ring_rows() == 10
    taken = []
    for step in range(1, 12):
        if schedule.takes_norms(step, schedule.sampled(step)):
            taken.append(step)
            schedule.norms_taken(step)
    assert taken == [1, 5, 9, 11]
    assert NormSchedule(every=10, norms_every=4, start_step=1, has_watch=False).ring_rows() == 3


@pytest.mark.parametrize(
    ("norm_us", "watch_us", "stride", "watching"),
    [(5, 0, 1, False), (15, 1, 2, True), (40, 0, 4, True), (40, 1, 8, True), (500, 1, 8, False), (15, 12, 2, False)],
)
def test_auto_chooses_the_smallest_stride_within_1_percent_of_the_step(norm_us, watch_us, stride, watching):
    schedule = NormSchedule(every=100, norms_every="auto", start_step=1, has_watch=True)
    timed(schedule, 1e-3, norm_us * 1e-6, watch_us * 1e-6)
    assert (schedule.stride, schedule.watching) == (stride, watching)


def test_auto_is_at_most_every_and_is_not_timed_on_sampled_steps():
    schedule = NormSchedule(every=2, norms_every="auto", start_step=1, has_watch=False)
    assert not schedule.timed(full=True, sampled=True) and schedule.timed(full=True, sampled=False)
    timed(schedule, 1e-3, 1e-3)
    assert schedule.stride == 2
