"""Issue 21: the Python API refuses arguments that cannot work at the call, naming the argument.

TypeError for the wrong kind of value, ValueError for a value out of its range or not among its choices;
never an AttributeError from deep inside, a raw enum error, or an argument silently ignored. Each case
runs on a tiny nn.Linear and is refused before anything is measured.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradcheck_cli import assert_gradients_healthy, check, check_model
from gradcheck_cli.common.choices import LossKind, Optimizer
from gradcheck_cli.common.limits import RANGES
from gradcheck_cli.examine.arguments import check_arguments, number_argument


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(8, 2)


def batch() -> torch.Tensor:
    return torch.randn(4, 8)


WRONG_MODELS = {
    "None": (None, "model must be an nn.Module"),
    "an int": (42, "model must be an nn.Module.*not int 42"),
    "a class": (nn.Linear, "not the class Linear; build it first"),
    "a list of modules": ([nn.Linear(8, 2)], "model must be an nn.Module"),
}


@pytest.mark.parametrize("case", list(WRONG_MODELS))
def test_a_model_that_is_not_a_module_instance_is_a_type_error_at_the_call(case):
    model, message = WRONG_MODELS[case]
    with pytest.raises(TypeError, match=message):
        check(model, batch())
    with pytest.raises(TypeError, match=message):
        assert_gradients_healthy(model, batch())


def test_check_model_refuses_a_class_too():
    with pytest.raises(TypeError, match="not the class Linear"):
        check_model(nn.Linear, lambda index: None, lambda output, batch: output)


WRONG_KINDS = {
    "passes as a string": ({"passes": "3"}, "passes must be an integer, not str '3'"),
    "passes as a float": ({"passes": 2.5}, "passes must be an integer, not float 2.5"),
    "passes as a bool": ({"passes": True}, "passes must be an integer, not bool True"),
    "seed as a float": ({"seed": 1.0}, "seed must be an integer"),
    "steps as a string": ({"steps": "1"}, "steps must be an integer"),
    "loss_fn not callable": ({"loss_fn": 3}, "loss_fn must be a function"),
    "ignore as one string": ({"ignore": "0"}, r"ignore must be a list of glob patterns.*not str '0'"),
    "ignore holding a number": ({"ignore": ["head", 3]}, "ignore must be a list of glob patterns"),
    "ignore as a number": ({"ignore": 3}, "ignore must be a list of glob patterns"),
    "a loss function as loss": ({"loss": torch.nn.functional.mse_loss}, "pass a function as loss_fn="),
    "verify as a string": ({"verify": "yes"}, "verify must be True or False"),
    "a threshold as a string": ({"decades_error": "3"}, "decades_error must be a number, not str '3'"),
    "min_trend_layers as a float": ({"min_trend_layers": 4.5}, "min_trend_layers must be an integer"),
    "lr as a string": ({"lr": "1e-3"}, "lr must be a number"),
    "an unknown threshold": ({"decade_error": 3.0}, "unknown threshold.*decade_error"),
}


@pytest.mark.parametrize("case", list(WRONG_KINDS))
def test_an_argument_of_the_wrong_kind_is_a_type_error_naming_it(case):
    arguments, message = WRONG_KINDS[case]
    with pytest.raises(TypeError, match=message):
        check(tiny(), batch(), **arguments)


OUT_OF_RANGE = {
    "no passes": ({"passes": 0}, r"passes must be an integer from 1 to 1000 \(got 0\), e.g. passes=3"),
    "endless passes": ({"passes": 10**23}, "passes must be an integer from 1 to 1000"),
    "a negative seed": ({"seed": -1}, "seed must be an integer from 0 to"),
    "a seed past 64 bits": ({"seed": 99999999999999999999}, "seed must be an integer from 0 to"),
    "negative steps": ({"steps": -1}, "steps must be an integer from 0 to 100000"),
    "an infinite lr": ({"lr": math.inf}, "lr must be a number greater than 0"),
    "a zero lr": ({"lr": 0.0}, "lr must be a number greater than 0"),
    "a NaN threshold": ({"decades_error": math.nan}, "decades_error must be a finite number"),
    "an infinite threshold": ({"relative_grad_error": math.inf}, "relative_grad_error must be a finite number"),
    "thresholds that do not fit": ({"decades_warning": 5.0}, "decades_warning <= decades_error"),
}


@pytest.mark.parametrize("case", list(OUT_OF_RANGE))
def test_a_number_out_of_its_range_is_a_value_error_naming_it(case):
    arguments, message = OUT_OF_RANGE[case]
    with pytest.raises(ValueError, match=message):
        check(tiny(), batch(), **arguments)


BAD_CHOICES = {
    "loss": ({"loss": "bogus"}, "loss must be one of ce, mse, sum, mean, not 'bogus'"),
    "optimizer": ({"optimizer": "bogus"}, "optimizer must be one of sgd, adam, not 'bogus'"),
    "optimizer as a number": ({"optimizer": 1}, "optimizer must be one of sgd, adam, not 1"),
}


@pytest.mark.parametrize("case", list(BAD_CHOICES))
def test_a_value_not_among_the_choices_is_a_value_error_listing_them(case):
    arguments, message = BAD_CHOICES[case]
    with pytest.raises(ValueError, match=message):
        check(tiny(), batch(), **arguments)


@pytest.mark.parametrize("fail_on", [None, "bogus", "errors"])
def test_fail_on_not_among_the_choices_is_refused_before_the_scan(fail_on, monkeypatch):
    monkeypatch.setattr("gradcheck_cli.scan.checks.check", lambda *args, **kwargs: pytest.fail("the scan ran"))
    with pytest.raises(ValueError, match=f"fail_on must be one of error, warning, never, not {fail_on!r}"):
        assert_gradients_healthy(tiny(), batch(), fail_on=fail_on)


EMPTY_BATCHES = {
    "a tensor": lambda: torch.randn(0, 8),
    "a tuple": lambda: (torch.randn(0, 8),),
    "a dict": lambda: {"input": torch.randn(0, 8)},
}


@pytest.mark.parametrize("case", list(EMPTY_BATCHES))
def test_an_empty_batch_is_a_value_error_not_a_nonfinite_verdict(case):
    with pytest.raises(ValueError, match="the batch is empty"):
        check(tiny(), EMPTY_BATCHES[case]())


def test_an_empty_second_dimension_is_not_an_empty_batch():
    # An empty cache or mask (a sequence of length 0) is a real input; only the batch dimension counts.
    check_arguments(tiny(), (torch.randn(4, 8), torch.zeros(4, 0)))


@pytest.mark.parametrize("inputs", ["0", b"data", 3, 2.5, object()])
def test_inputs_of_another_kind_are_a_type_error(inputs):
    with pytest.raises(TypeError, match="inputs must be a tensor, a tuple of positional inputs"):
        check(tiny(), inputs)


@pytest.mark.parametrize("given", [{"inputs": torch.randn(4, 8)}, {"loss_fn": lambda output, batch: output.sum()}])
def test_inputs_and_loss_fn_are_not_silently_ignored_for_a_target(given):
    with pytest.raises(ValueError, match="apply to a model given as an nn.Module"):
        check("examples/vanishing_mlp.py", **given)


def test_good_arguments_are_converted_for_the_scan():
    options, thresholds = check_arguments(
        tiny(), batch, loss="mse", passes=2, seed=2**63 - 1, ignore=["head.*"], steps=1, optimizer="adam",
        thresholds={"lr": 1, "min_trend_layers": 3, "decades_error": 3},
    )  # fmt: skip
    assert (options.loss, options.optimizer, options.ignore) == (LossKind.MSE, Optimizer.ADAM, ("head.*",))
    assert (options.passes, options.seed, options.steps) == (2, 2**63 - 1, 1)
    assert (thresholds.lr, thresholds.min_trend_layers, thresholds.decades_error) == (1.0, 3, 3.0)


def test_the_ranges_are_those_of_the_command_line():
    for name in ("passes", "seed", "steps", "lr"):
        allowed = RANGES[name]
        assert number_argument(name, allowed.maximum) == allowed.maximum
        with pytest.raises(ValueError, match=f"^{name} must be"):
            number_argument(name, allowed.maximum * 2)


def test_a_good_call_still_measures():
    report = check(tiny(), batch(), passes=1, ignore=(), loss_fn=lambda output, inputs: output.pow(2).mean())
    assert report.result.layers
