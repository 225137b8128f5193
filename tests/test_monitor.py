"""The Monitor inside a training loop: it names the step and layer where a problem began, costs no host
sync between samples, and leaves the model exactly as it found it."""

import json
import math
import subprocess
import sys
import warnings
from dataclasses import asdict

import pytest
import torch
from torch import nn

import gradcheck_cli
from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.errors import GradcheckError, InvalidOptionError
from gradcheck_cli.measure.probe import probe_model
from gradcheck_cli.monitor import monitor as monitor_module
from gradcheck_cli.monitor import ring as ring_module
from gradcheck_cli.monitor.history import GRADIENT_GROWTH, NONFINITE, read_history
from gradcheck_cli.monitor.monitor import GradientProblemError, GradientProblemWarning, Monitor

# The explosion: SGD at lr 0.05, raised to 50 after step SPIKE_AFTER's gradients were read. Step
# SPIKE_AFTER + 1 is the first whose gradients were computed at the exploded weights.
LR, SPIKE_LR, SPIKE_AFTER, EVERY = 0.05, 50.0, 33, 10


def mlp(bias: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 32, bias=bias), nn.Tanh(), nn.Linear(32, 32, bias=bias), nn.Tanh(),
        nn.Linear(32, 32, bias=bias), nn.Tanh(), nn.Linear(32, 4, bias=bias),
    )  # fmt: skip


DATA_X = torch.randn(256, 16, generator=torch.Generator().manual_seed(1))
DATA_Y = (DATA_X[:, :4] * 2).sin()


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.randint(0, 256, (32,), generator=torch.Generator().manual_seed(step))
    return DATA_X[index], DATA_Y[index]


def train(model, monitor, steps, *, spike_after=None, nan_grad_at=None, nan_input_at=None, norms=None, bias_norms=None):
    """A plain SGD loop with the monitor stepped after backward; ``norms`` collects each step's per-layer
    gradient norms (weight and bias), ``bias_norms`` those of the biases, measured here independently of the
    monitor."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    layers = [(name, m) for name, m in model.named_children() if isinstance(m, nn.Linear)]
    for step in range(1, steps + 1):
        x, y = batch(step)
        if step == nan_input_at:
            x = x.clone()
            x[0, 0] = float("nan")
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        if step == nan_grad_at:
            model[2].weight.grad[0, 0] = float("nan")
        if norms is not None:
            norms.append({name: math.hypot(*(p.grad.norm().item() for p in m.parameters())) for name, m in layers})
        if bias_norms is not None:
            bias_norms.append({name: m.bias.grad.norm().item() for name, m in layers})
        monitor.step(loss)
        if step == spike_after:
            for group in optimizer.param_groups:
                group["lr"] = SPIKE_LR
        optimizer.step()
        optimizer.zero_grad()


def hook_state(model: nn.Module) -> list:
    return [
        (
            dict(m._forward_hooks),
            dict(m._forward_pre_hooks),
            dict(m._backward_hooks),
            dict(m._backward_pre_hooks),
            dict(getattr(m, "_forward_hooks_with_kwargs", {})),
        )  # fmt: skip
        for m in model.modules()
    ]


# ----------------------------------------------------------------------------------------- the model as found


def test_detach_restores_hooks_grads_modes_and_weights_bit_for_bit():
    model = mlp()
    model[2].eval()  # a mode the monitor must not touch
    user_hook = model[0].register_forward_hook(lambda *args: None)
    x, y = batch(0)
    nn.functional.mse_loss(model(x), y).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    grad_values = {name: g.clone() for name, g in grads.items()}
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    hooks_before = hook_state(model)
    modes = [m.training for m in model.modules()]

    monitor = Monitor(model, norms_every=1, every=1, on_problem="record")  # every step sampled: hooks are armed at once
    assert hook_state(model) != hooks_before
    monitor.step()
    nn.functional.mse_loss(model(x), y)  # a forward pass with the hooks in place, as the next step would run
    monitor.detach()

    assert hook_state(model) == hooks_before
    assert [m.training for m in model.modules()] == modes
    for name, p in model.named_parameters():
        assert p.grad is grads[name] and torch.equal(p.grad, grad_values[name])
        assert torch.equal(p.detach(), weights[name])
    user_hook.remove()
    assert monitor.detach() == []  # idempotent


def test_leaving_the_with_block_on_an_exception_removes_hooks_and_keeps_the_exception():
    model = mlp()
    before = hook_state(model)
    with pytest.raises(KeyError, match="the user's own"):
        with Monitor(model, norms_every=1, every=2, on_problem="raise") as monitor:
            for step in (1, 2):  # step 1 is sampled; after step 2 the hooks wait for step 3
                x, y = batch(step)
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                if step == 2:
                    model[4].weight.grad[0, 0] = float("nan")
                monitor.step(loss)
                model.zero_grad()
            assert hook_state(model) != before
            raise KeyError("the user's own")
    assert hook_state(model) == before
    assert not monitor.attached
    # step 2 was read on the way out: its NaN is kept, not raised over the user's exception
    assert [(p.kind, p.step, p.layer) for p in monitor.problems] == [(NONFINITE, 2, "4")]


def test_a_detached_monitor_refuses_steps():
    monitor = Monitor(mlp(), norms_every=1, every=5)
    monitor.detach()
    with pytest.raises(InvalidOptionError, match="detached"):
        monitor.step()


def test_signals_off_registers_no_hook_at_all():
    model = mlp()
    before = hook_state(model)
    monitor = Monitor(model, norms_every=1, every=1, on_problem="record", signals=False)
    assert hook_state(model) == before
    train(model, monitor, 3)
    assert hook_state(model) == before
    assert all(record.layers[0].backward is None for record in monitor.history)
    assert all(record.layers[0].weight_grad_norm is not None for record in monitor.history)


# ----------------------------------------------------------------------------------------- cost


def test_no_host_sync_on_steps_it_does_not_sample(monkeypatch):
    """Between samples, step() reads nothing back: no .item(), .tolist(), float(), bool() on a tensor.
    A sampled step reads everything in one .tolist()."""
    model = mlp()
    monitor = Monitor(model, norms_every=1, every=5, on_problem="record")
    calls = []
    counting = {"on": False}
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy", "cpu"):
        original = getattr(torch.Tensor, name)

        def wrapped(self, *args, _original=original, _name=name, **kwargs):
            if counting["on"]:
                calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    per_step = {}
    for step in range(1, 12):
        x, y = batch(step)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        counting["on"] = True
        monitor.step(loss)
        counting["on"] = False
        per_step[step] = list(calls)
        calls.clear()
        optimizer.step()
        optimizer.zero_grad()
    sampled = {1, 6, 11}
    assert all(per_step[step] == [] for step in per_step if step not in sampled), per_step
    assert all(per_step[step] == ["tolist"] for step in sampled), per_step


# ----------------------------------------------------------------------------------------- what it finds


def test_learning_rate_spike_is_named_at_the_first_step_whose_gradients_show_it():
    model = mlp()
    monitor = Monitor(model, norms_every=1, every=EVERY, on_problem="record")
    norms: list[dict[str, float]] = []
    train(model, monitor, 45, spike_after=SPIKE_AFTER, norms=norms)
    growth = [p for p in monitor.problems if p.kind == GRADIENT_GROWTH]
    assert len(growth) == 1
    (problem,) = growth
    # The lr is raised after step 33's gradients were computed: step 34 is the first to show it, and the
    # sample of step 41 finds it there, not at 41.
    assert problem.step == SPIKE_AFTER + 1
    assert problem.found_at == 41
    # The layer named: of those whose gradient grew past x100 against their median over steps 1-10, the one
    # nearest the loss, worked out here from norms taken independently of the monitor.
    names = ["0", "2", "4", "6"]
    reference = {n: sorted(step[n] for step in norms[:10]) for n in names}
    median = {n: (values[4] + values[5]) / 2 for n, values in reference.items()}
    crossed = [n for n in names if norms[SPIKE_AFTER][n] > 100 * median[n]]
    assert crossed and problem.layer == crossed[-1]
    assert set(problem.layers) == set(crossed)
    assert problem.figures["factor"] == pytest.approx(norms[SPIKE_AFTER][crossed[-1]] / median[crossed[-1]], rel=1e-3)
    assert all(p.step > SPIKE_AFTER for p in monitor.problems)


def test_a_healthy_run_has_no_problem_and_keeps_the_last_records():
    model = mlp()
    monitor = Monitor(model, norms_every=1, every=4, on_problem="raise", history=3)
    train(model, monitor, 30)
    assert monitor.problems == []
    assert [record.step for record in monitor.history] == [21, 25, 29]
    assert monitor.last_step == 30
    monitor.detach()
    assert [record.step for record in monitor.history] == [25, 29, 30]  # the unread step 30, read at detach


def test_what_a_scan_finds_is_a_problem_at_the_first_sample_and_once_while_it_lasts():
    torch.manual_seed(0)
    layers = [module for _ in range(10) for module in (nn.Linear(64, 64), nn.ReLU())]
    model = nn.Sequential(*layers, nn.Linear(64, 10))  # PyTorch's default init: x0.41 per ReLU layer
    monitor = Monitor(model, norms_every=1, every=3, on_problem="record")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for step in range(1, 8):
        x = torch.randn(32, 64, generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(x), torch.arange(32) % 10)
        loss.backward()
        monitor.step(loss)
        optimizer.step()
        optimizer.zero_grad()
    (problem,) = monitor.problems  # samples at steps 1, 4, 7 all show it: one problem
    assert (problem.kind, problem.step, problem.found_at) == ("vanishing_gradient", 1, 1)
    assert problem.message.startswith("step 1: Vanishing gradients: the backward signal at the input end is")
    assert problem.figures["decades"] < -2 and problem.layer == problem.layers[0] == "0"
    assert all(record.signals for record in monitor.history)


def test_nan_in_one_gradient_is_named_at_its_step_and_layer():
    model = mlp()
    monitor = Monitor(model, norms_every=1, every=EVERY, on_problem="record")
    train(model, monitor, 25, nan_grad_at=17)
    (problem,) = monitor.problems  # one per run: what follows a NaN is its consequence
    assert (problem.kind, problem.step, problem.layer, problem.found_at) == (NONFINITE, 17, "2", 21)
    assert math.isfinite(problem.figures["loss"])
    assert "step 17" in problem.message and "2 (Linear)" in problem.message


def test_nan_in_the_input_is_named_at_its_step_as_the_loss():
    model = mlp()
    monitor = Monitor(model, norms_every=1, every=EVERY, on_problem="record")
    train(model, monitor, 12, nan_input_at=8)
    (problem,) = monitor.problems
    assert (problem.kind, problem.step, problem.layer) == (NONFINITE, 8, None)
    assert problem.message.startswith("step 8: non-finite loss: the loss is NaN")


def test_warn_names_the_problem_in_one_line_at_the_users_call():
    model = mlp()
    monitor = Monitor(model, norms_every=1, every=EVERY)  # on_problem="warn" is the default
    with pytest.warns(GradientProblemWarning) as caught:
        train(model, monitor, 12, nan_grad_at=5)
    (warning,) = caught
    assert str(warning.message).startswith("gradcheck: step 5: non-finite gradient: the gradient norm of 2 (Linear)")
    assert "\n" not in str(warning.message)
    assert warning.filename == __file__  # points at monitor.step(loss) in the training loop


def test_raise_stops_training_at_the_sample_that_found_it():
    model = mlp()
    monitor = Monitor(model, norms_every=1, every=EVERY, on_problem="raise")
    with pytest.raises(GradientProblemError) as raised:
        train(model, monitor, 60, spike_after=SPIKE_AFTER)
    error = raised.value
    assert (error.kind, error.step) == (GRADIENT_GROWTH, SPIKE_AFTER + 1)
    assert monitor.last_step == 41 and error.figures["factor"] > 100
    assert isinstance(error, Exception) and not isinstance(error, GradcheckError)  # not a usage error (exit 2)
    monitor.detach()


def test_record_and_a_function_for_on_problem():
    seen = []
    model = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recorded = Monitor(model, norms_every=1, every=EVERY, on_problem="record")
        train(model, recorded, 12, nan_grad_at=3)
    model = mlp()
    called = Monitor(model, norms_every=1, every=EVERY, on_problem=seen.append)
    train(model, called, 12, nan_grad_at=3)
    assert [p.step for p in recorded.problems] == [p.step for p in seen] == [3]


def test_every_above_the_ring_reads_out_when_full_and_still_names_the_step(monkeypatch):
    monkeypatch.setattr(ring_module, "RING_BUDGET_BYTES", 3 * 8 * 8)  # 8 parameters: 3 rows
    model = mlp()
    monitor = Monitor(model, norms_every=1, every=10, on_problem="record")
    assert monitor._ring.capacity == 3
    train(model, monitor, 11, nan_grad_at=5)
    (problem,) = monitor.problems
    assert (problem.step, problem.layer) == (5, "2")
    assert [(record.step, record.steps) for record in monitor.history] == [(1, 1), (11, 10)]
    assert monitor.history[-1].problems == [problem]


def test_sampled_figures_match_a_scan_of_the_same_batch():
    """The monitor's per-layer figures on a sampled step are the probe's on the same batch."""
    model = mlp()
    x, y = batch(3)
    scanned = probe_model(
        model, lambda i: Batch((x,), target=y), lambda out, b: nn.functional.mse_loss(out, y), passes=1
    )
    monitor = Monitor(model, norms_every=1, every=1, on_problem="record")
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    monitor.step(loss)
    (record,) = monitor.history
    assert record.batch_size == 32 and record.loss == pytest.approx(loss.item())
    for ours, theirs in zip(record.layers, scanned.layers):
        assert ours.name == theirs.name
        for key in ("weight_grad_norm", "other_grad_norm", "grad_norm", "weight_norm", "relative_grad",
                    "backward", "forward_rms", "weight_std"):  # fmt: skip
            assert getattr(ours, key) == pytest.approx(getattr(theirs, key), rel=1e-5), key


def test_skip_connections_are_read_off_the_first_loss():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.block, self.out = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 1)

        def forward(self, x):
            h = self.inp(x)
            return self.out(h + self.block(torch.relu(h)))

    model = Residual()
    monitor = Monitor(model, norms_every=1, every=2, on_problem="record")
    loss = model(torch.randn(4, 8)).sum()
    loss.backward()
    monitor.step(loss)
    assert monitor.header.structure.residual is True


def test_a_layer_without_a_gradient_on_some_steps_is_no_problem():
    model = mlp()
    model[6].requires_grad_(False)  # frozen head: never a gradient
    monitor = Monitor(model, norms_every=1, every=3, on_problem="raise")
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    for step in range(1, 8):
        x, y = batch(step)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        if step % 2:
            model[0].weight.grad = None  # a parameter the step did not reach
        monitor.step(loss)
        optimizer.step()
        optimizer.zero_grad()
    record = monitor.history[-1]
    assert record.layer("6").grad_norm is None and record.layer("6").trainable is False
    assert record.layer("0").weight_grad_norm is None and record.layer("0").other_grad_norm is not None


def test_norms_every_takes_the_per_step_norms_on_fewer_steps_and_names_the_first_that_shows_it():
    model = mlp(bias=False)  # no bias or norm scale to watch between the full norms
    monitor = Monitor(model, every=10, norms_every=4, on_problem="record")
    train(model, monitor, 12, nan_grad_at=6)
    # norms at steps 1, 5, 9 (every 4th) and 11 (sampled): step 6's NaN gradient made the weights NaN, and
    # step 9 is the first step read that shows it (in its loss)
    (problem,) = monitor.problems
    assert (problem.kind, problem.step, problem.layer) == (NONFINITE, 9, None)
    assert "the first step read since step 5" in problem.message
    assert [(record.step, record.steps, record.norm_steps) for record in monitor.history] == [(1, 1, 1), (11, 10, 3)]


def test_between_the_full_norms_the_watch_reads_the_loss_and_biases_of_every_step():
    model = mlp()
    monitor = Monitor(model, every=10, norms_every=4, on_problem="record")
    train(model, monitor, 12, nan_grad_at=6)
    # Step 6's NaN is in a weight's gradient, which only steps 1, 5, 9 and 11 read; the weights it made NaN
    # give step 7 a NaN loss, read with the biases' norms on every step.
    (problem,) = monitor.problems
    assert (problem.kind, problem.step, problem.layer) == (NONFINITE, 7, None)
    assert problem.message.startswith("step 7: non-finite loss")
    # the records keep the steps whose norms were all taken
    assert [(record.step, record.steps, record.norm_steps) for record in monitor.history] == [(1, 1, 1), (11, 10, 3)]


def test_between_the_full_norms_a_learning_rate_spike_is_named_at_its_own_step_by_the_biases():
    model = mlp()
    monitor = Monitor(model, norms_every=4, every=EVERY, on_problem="record")
    biases: list[dict[str, float]] = []
    train(model, monitor, 45, spike_after=SPIKE_AFTER, bias_norms=biases)
    (problem,) = [p for p in monitor.problems if p.kind == GRADIENT_GROWTH]
    # Every norm is taken on the sampled steps (1, 11, 21, 31, 41) and every 4th step from the last:
    # step 34 reads the biases only, and they show the spike there.
    full = {1, 5, 9, 11, 15, 19, 21, 25, 29, 31, 35, 39, 41}
    assert SPIKE_AFTER + 1 not in full
    assert (problem.step, problem.found_at) == (SPIKE_AFTER + 1, 41)
    # Each bias is judged against its own median over its first 10 watched steps; the one named is nearest the loss.
    watched = [step for step in range(1, 46) if step not in full][:10]
    names = ["0", "2", "4", "6"]
    median = {n: sorted(biases[step - 1][n] for step in watched)[4:6] for n in names}
    median = {n: (low + high) / 2 for n, (low, high) in median.items()}
    crossed = [n for n in names if biases[SPIKE_AFTER][n] > 100 * median[n]]
    assert crossed and problem.layer == crossed[-1]
    assert problem.figures["factor"] == pytest.approx(biases[SPIKE_AFTER][crossed[-1]] / median[crossed[-1]], rel=1e-3)
    assert problem.figures["reference_steps"] == [watched[0], watched[-1]]
    assert problem.message.startswith(f"step 34: the gradient norm of {crossed[-1]} (Linear) bias grew x")
    assert len([p for p in monitor.problems if p.kind == GRADIENT_GROWTH]) == 1  # the full norms' same episode


class StepClock:
    """The monitor's clock in a test: a norm-taking step() reads it on entry and after taking the norms, so
    each reading advances it by ``monitor_seconds``, and ``train_timed`` adds ``step_seconds`` of training
    between two calls: the monitor measures a share of monitor_seconds / (step_seconds + monitor_seconds)."""

    def __init__(self, monitor_seconds: float, step_seconds: float):
        self.now, self.per_reading, self.step_seconds = 0.0, monitor_seconds, step_seconds

    def __call__(self) -> float:
        self.now += self.per_reading
        return self.now


def train_timed(model, monitor, clock, steps, *, nan_grad_at=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for step in range(1, steps + 1):
        x, y = batch(step)
        nn.functional.mse_loss(model(x), y).backward()
        if step == nan_grad_at:
            model[2].weight.grad[0, 0] = float("nan")
        monitor.step()
        optimizer.step()
        optimizer.zero_grad()
        clock.now += clock.step_seconds


@pytest.mark.parametrize(
    ("monitor_us", "step_us", "stride", "watching"),
    [(5, 1000, 1, False), (10, 1000, 1, False), (15, 1000, 2, True), (40, 1000, 4, True), (500, 1000, 8, False)],
)
def test_auto_norms_every_takes_the_norms_every_step_while_they_cost_at_most_1_percent(
    monkeypatch, monitor_us, step_us, stride, watching
):
    clock = StepClock(monitor_us * 1e-6, step_us * 1e-6)
    monkeypatch.setattr(monitor_module, "perf_counter", clock)
    model = mlp()
    monitor = Monitor(model, every=100, on_problem="record")
    assert monitor.norms_every == "auto" and monitor.norms_stride == 1
    train_timed(model, monitor, clock, 40)
    # chosen after 16 timed steps (steps 2-17), then taken on every stride-th step from there; the steps
    # between read the watch (the biases' norms), not yet timed, where the full norms leave it room
    assert (monitor.norms_stride, monitor._schedule.watching) == (stride, watching)
    ring = monitor._ring
    rows = list(zip(ring.row_steps[: ring.unread], ring.full[: ring.unread]))
    assert [step for step, full in rows if full] == list(range(2, 18)) + list(range(17 + stride, 41, stride))
    assert [step for step, _ in rows] == (list(range(2, 41)) if watching else [step for step, _ in rows if _])
    monitor.detach()
    assert monitor.history[-1].norm_steps == 16 + len(range(17 + stride, 41, stride))


def test_auto_norms_every_names_the_steps_a_problem_may_have_begun_at_and_chooses_again_at_each_sample(
    monkeypatch,
):
    clock = StepClock(40e-6, 1e-3)
    monkeypatch.setattr(monitor_module, "perf_counter", clock)
    model = mlp()
    monitor = Monitor(model, every=30, on_problem="record")
    train_timed(model, monitor, clock, 31, nan_grad_at=27)
    # every 4th step from 17: 21, 25, 29; the NaN put in a weight's gradient at 27 made the weights NaN, and
    # step 28's bias gradients, read between the full norms, show it first; step 31 is sampled and reads them
    (problem,) = monitor.problems
    assert (problem.kind, problem.step, problem.layer) == (NONFINITE, 28, "6")
    assert problem.message.startswith("step 28: non-finite gradient: the gradient norm of 6 (Linear) bias is NaN")
    # steps get slower (a larger batch, say): at the next sample the norms go back to every step
    clock.step_seconds = 10e-3
    train_timed(model, monitor, clock, 30)
    assert monitor.norms_stride == 1
    monitor.detach()


def test_auto_norms_every_is_at_most_every():
    clock = StepClock(1e-3, 1e-3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(monitor_module, "perf_counter", clock)
        model = mlp()
        monitor = Monitor(model, every=2, on_problem="record")
        train_timed(model, monitor, clock, 40)
        assert monitor.norms_stride == 2
        monitor.detach()


def test_start_step_numbers_a_resumed_run():
    model = mlp()
    monitor = Monitor(model, norms_every=1, every=5, on_problem="record", start_step=1001)
    train(model, monitor, 7, nan_grad_at=4)
    assert [record.step for record in monitor.history] == [1001, 1006]
    assert monitor.problems[0].step == 1004


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"every": 0}, "every must be a whole number of at least 1"),
        ({"history": 1.5}, "history must be a whole number"),
        ({"on_problem": "explode"}, "on_problem must be one of 'warn', 'raise', 'record'"),
        ({"grow_factor": 1.0}, "grow_factor and shrink_factor must be above 1"),
        ({"reference_steps": 0}, "reference_steps must be at least 1"),
    ],
)
def test_bad_options_say_what_to_pass(options, message):
    with pytest.raises(InvalidOptionError, match=message):
        Monitor(mlp(), **options)


def test_a_loss_that_is_not_a_scalar_is_refused():
    model = mlp()
    monitor = Monitor(model, norms_every=1, every=5)
    with pytest.raises(InvalidOptionError, match=r"the scalar loss \(got a tensor of shape \(3,\)\)"):
        monitor.step(torch.ones(3))


def test_a_model_without_trainable_parameters_is_refused():
    with pytest.raises(InvalidOptionError, match="no trainable parameters"):
        Monitor(mlp().requires_grad_(False))


# ----------------------------------------------------------------------------------------- history files


def test_log_and_write_history_round_trip(tmp_path):
    model = mlp()
    log = tmp_path / "run" / "history.jsonl"
    with Monitor(model, norms_every=1, every=EVERY, on_problem="record", log=log) as monitor:
        train(model, monitor, 24, nan_grad_at=15)
    written = tmp_path / "kept.jsonl"
    monitor.write_history(written)
    assert log.read_text() == written.read_text()
    lines = log.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["schema"] == "gradcheck.monitor-history" and header["schema_version"] == "1.0"
    assert [layer["name"] for layer in header["layers"]] == ["0", "2", "4", "6"]
    assert header["thresholds"]["decades_error"] == 2.0 and header["rules"]["grow_factor"] == 100.0
    assert len(lines) == 1 + len(monitor.history)
    history = read_history(log)
    for read, kept in zip(history.records, monitor.history):
        assert (read.step, read.steps, read.batch_size, read.signals) == (
            kept.step,
            kept.steps,
            kept.batch_size,
            kept.signals,
        )
        assert read.loss == kept.loss or (math.isnan(read.loss) and math.isnan(kept.loss))
        for a, b in zip(read.layers, kept.layers):
            for key in ("grad_norm", "weight_norm", "backward", "forward_rms", "relative_grad"):
                x, y = getattr(a, key), getattr(b, key)
                assert x == y or (x != x and y != y), key
            assert a.grad_nonfinite == b.grad_nonfinite
        assert [json.dumps(asdict(p)) for p in read.problems] == [json.dumps(asdict(p)) for p in kept.problems]
    assert [p.step for p in history.problems] == [15]
    assert any("nan" in line for line in lines[1:])  # non-finite numbers as strings, not NaN tokens


def test_a_log_that_cannot_be_written_fails_at_construction(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(GradcheckError, match="Cannot write the history to"):
        Monitor(mlp(), log=blocker / "history.jsonl")


def test_importing_gradcheck_imports_no_trainer_and_no_torch():
    code = (
        "import sys, gradcheck_cli, gradcheck_cli.cli.main, gradcheck_cli.monitor.history, gradcheck_cli.render.history\n"
        "assert 'torch' not in sys.modules, 'torch'\n"
        "import gradcheck_cli.monitor.monitor, gradcheck_cli.integrations\n"
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_monitor_is_exported_under_one_name():
    assert gradcheck_cli.Monitor is Monitor
    assert gradcheck_cli.GradientProblemError is GradientProblemError
    assert "Monitor" in gradcheck_cli.__all__
    assert not hasattr(gradcheck_cli, "GradientMonitor")


# ----------------------------------------------------------------------------------------- trainer adapters


def test_lightning_callback_steps_once_per_optimizer_step(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from torch.utils.data import DataLoader, TensorDataset

    from gradcheck_cli.integrations.lightning import MonitorCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def training_step(self, batch, index):
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def on_after_backward(self):  # a NaN in one gradient at the 5th optimizer step
            if self.trainer.global_step == 4:
                self.net[2].weight.grad[0, 0] = float("nan")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=LR)

    callback = MonitorCallback(every=5, norms_every=1, on_problem="record", log=tmp_path / "history.jsonl")
    trainer = pl.Trainer(
        max_steps=8, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback], accumulate_grad_batches=2,
        default_root_dir=tmp_path,
    )  # fmt: skip
    module = Module()
    before = hook_state(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(TensorDataset(DATA_X[:64], DATA_Y[:64]), batch_size=4))
    monitor = callback.monitor
    # 8 optimizer steps of 2 batches each: one monitor step each, with both batches in the sampled figures
    assert monitor.last_step == 8 and not monitor.attached
    assert [(r.step, r.steps) for r in monitor.history] == [(1, 1), (6, 5), (8, 2)]
    assert monitor.history[0].batch_size == 8
    (problem,) = monitor.problems
    assert (problem.kind, problem.step, problem.layer) == (NONFINITE, 5, "net.2")
    assert hook_state(module) == before
    assert "on_before_optimizer_step" in read_history(tmp_path / "history.jsonl").header.note


def test_hugging_face_callback_reads_gradients_before_the_optimizer_step(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments

    from gradcheck_cli.integrations.huggingface import MonitorCallback

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()

        def forward(self, x, labels=None):
            out = self.net(x)
            return {"loss": nn.functional.mse_loss(out, labels), "logits": out}

    data = [{"x": x, "labels": y} for x, y in zip(DATA_X[:64], DATA_Y[:64])]
    callback = MonitorCallback(every=5, norms_every=1, on_problem="record")
    arguments = TrainingArguments(
        output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=4, gradient_accumulation_steps=2,
        report_to="none", save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
        max_grad_norm=0.0,
    )  # fmt: skip
    model = Model()
    before = hook_state(model)
    Trainer(model=model, args=arguments, train_dataset=data, callbacks=[callback]).train()
    monitor = callback.monitor
    assert monitor.last_step == 6 and not monitor.attached
    assert [(r.step, r.steps) for r in monitor.history] == [(1, 1), (6, 5)]
    # the gradients were still there (not yet zeroed) and the sampled step saw both accumulated batches
    assert all(layer.grad_norm and layer.grad_norm > 0 for layer in monitor.history[0].layers)
    assert monitor.history[0].batch_size == 8
    assert "without gradient clipping" in monitor.header.note
    assert hook_state(model) == before
