"""Where the first NaN/Inf came from: small models whose NaN is made at a known place."""

import pytest
import torch
from torch import nn

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.measure.nonfinite import trace_nonfinite


def mean_loss(output, batch):
    return output.float().mean()


class Log(nn.Module):
    """No parameters: log of a negative input is NaN."""

    def forward(self, x):
        return torch.log(x)


class LinearThenLog(nn.Module):
    """A child module, then the NaN made by its own forward code."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x):
        return torch.log(self.inner(x) - 100.0)


class SqrtAbs(nn.Module):
    """Finite forward, infinite backward: d/dx sqrt(|x|) is inf at x = 0."""

    def forward(self, x):
        return x.abs().sqrt()


class Raises(nn.Module):
    def forward(self, x):
        raise ValueError("broken model")


def assert_unhooked(model, x):
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
        assert not module._forward_hooks_with_kwargs and not module._forward_pre_hooks_with_kwargs
    for param in model.parameters():
        assert not param._backward_hooks
    assert not x._backward_hooks


def test_forward_origin_is_the_block_that_takes_log_of_negatives(torch_seed):
    model = nn.Sequential(nn.Linear(4, 8), Log(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    origin = trace_nonfinite(model, Batch(args=(torch.randn(16, 4),)), mean_loss)

    assert (origin.stage, origin.module, origin.type) == ("forward", "1", "Log")
    assert origin.detail.startswith("output: ") and "NaN" in origin.detail
    assert origin.detail.endswith("of 128 values")
    ((low, high),) = origin.input_ranges
    assert low < 0 < high
    assert origin.passed_on == ["2", "3", "4"]
    assert "(model)" not in origin.passed_on


def test_forward_origin_is_a_block_whose_own_code_makes_it_not_its_child(torch_seed):
    model = nn.Sequential(nn.Linear(4, 4), LinearThenLog(), nn.Linear(4, 2))
    origin = trace_nonfinite(model, Batch(args=(torch.randn(8, 4),)), mean_loss)

    assert (origin.stage, origin.module, origin.type) == ("forward", "1", "LinearThenLog")
    assert origin.passed_on == ["2"]


def test_forward_origin_is_a_linear_with_an_infinite_weight(torch_seed):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[2].weight[0, 0] = float("inf")
    origin = trace_nonfinite(model, Batch(args=(torch.randn(8, 4),)), mean_loss)

    assert (origin.stage, origin.module, origin.type) == ("forward", "2", "Linear")


def test_forward_origin_is_the_batch_when_the_input_is_not_finite(torch_seed):
    x = torch.randn(8, 4)
    x[0, 0] = float("nan")
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    origin = trace_nonfinite(model, Batch(args=(x,)), mean_loss)

    assert (origin.stage, origin.module) == ("forward", "(model)")
    assert "1 NaN, 0 Inf of 32 values" in origin.detail and "batch" in origin.detail
    assert origin.passed_on == ["0", "1"]


def test_backward_origin_is_the_sqrt_at_zero(torch_seed):
    model = nn.Sequential(nn.Linear(4, 8), SqrtAbs(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight.abs_()  # a non-negative input to sqrt, as after a ReLU ...
        model[0].weight[:4].zero_()  # ... with four units exactly 0, where sqrt has an infinite slope
        model[0].bias.zero_()
    origin = trace_nonfinite(model, Batch(args=(torch.rand(16, 4),)), mean_loss)

    assert (origin.stage, origin.module, origin.type) == ("backward", "1", "SqrtAbs")
    assert origin.detail.startswith("gradient w.r.t. its input: ")
    assert origin.detail.endswith("gradient at its output finite")
    ((low, high),) = origin.input_ranges
    assert low == 0.0 < high
    assert origin.passed_on == ["0"]  # the first Linear's weight gradient is not finite either


def test_backward_origin_on_the_first_layer_is_read_off_its_weight_gradient(torch_seed):
    class SqrtLinear(nn.Linear):
        def forward(self, x):
            return super().forward(x).abs().sqrt()

    layer = SqrtLinear(4, 2)
    with torch.no_grad():
        layer.weight[0].zero_()
        layer.bias[0] = 0.0
    model = nn.Sequential(layer, nn.Linear(2, 1))
    origin = trace_nonfinite(model, Batch(args=(torch.randn(8, 4),)), mean_loss)

    assert (origin.stage, origin.module) == ("backward", "0")
    assert origin.detail.startswith("gradient w.r.t. its parameter ")


def test_backward_origin_in_the_loss_function_is_the_loss(torch_seed):
    # sqrt of a mean squared error that is exactly zero: a finite loss with an infinite gradient.
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    origin = trace_nonfinite(model, Batch(args=(torch.randn(8, 4),)), lambda out, batch: out.pow(2).mean().sqrt())

    assert (origin.stage, origin.module, origin.type) == ("loss", None, None)
    assert origin.detail.startswith("gradient of the loss w.r.t. the model output")
    assert origin.input_ranges == [(0.0, 0.0)]


def test_loss_origin_when_the_outputs_are_finite(torch_seed):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    origin = trace_nonfinite(model, Batch(args=(torch.randn(8, 4),)), lambda out, batch: torch.log(out.sum() * 0 - 1))

    assert (origin.stage, origin.module, origin.type) == ("loss", None, None)
    assert origin.detail == "loss: nan from finite model outputs"
    assert len(origin.input_ranges) == 1


def test_inplace_relu_does_not_break_the_backward_trace(torch_seed):
    # Full backward hooks raise on in-place modules; tensor hooks do not.
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 8), SqrtAbs(), nn.Linear(8, 2))
    with torch.no_grad():
        model[2].weight[:4].zero_()
        model[2].bias[:4].zero_()
    origin = trace_nonfinite(model, Batch(args=(torch.randn(16, 4),)), mean_loss)

    assert (origin.stage, origin.module) == ("backward", "3")
    assert origin.passed_on == ["2", "1", "0"]


def test_inplace_relu_with_a_forward_nan_later(torch_seed):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 8), Log(), nn.Linear(8, 2))
    origin = trace_nonfinite(model, Batch(args=(torch.randn(16, 4),)), mean_loss)

    assert (origin.stage, origin.module) == ("forward", "3")


def test_all_finite_gives_none_and_leaves_no_hooks(torch_seed):
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    x = torch.randn(8, 4, requires_grad=True)
    assert trace_nonfinite(model, Batch(args=(x,)), mean_loss) is None
    assert_unhooked(model, x)


def test_hooks_removed_when_the_model_raises(torch_seed):
    model = nn.Sequential(nn.Linear(4, 4), Raises())
    x = torch.randn(8, 4, requires_grad=True)
    with pytest.raises(ValueError, match="broken model"):
        trace_nonfinite(model, Batch(args=(x,)), mean_loss)
    assert_unhooked(model, x)


def test_keyword_inputs_count_as_inputs(torch_seed):
    class Scaled(nn.Module):
        def forward(self, x, *, scale):
            return x * scale

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.scaled = Scaled()

        def forward(self, x, scale):
            return self.scaled(x, scale=scale)

    scale = torch.tensor(float("inf"))
    origin = trace_nonfinite(Model(), Batch(args=(torch.randn(4),), kwargs={"scale": scale}), mean_loss)

    # The infinite scale came in with the batch: no module made it.
    assert (origin.stage, origin.module) == ("forward", "(model)")
    assert origin.passed_on == ["scaled"]


def test_backward_origin_in_a_parents_own_code_between_children(torch_seed):
    class SqrtBetween(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(x).abs().sqrt())

    model = SqrtBetween()
    with torch.no_grad():
        model.a.weight[:2].zero_()
        model.a.bias[:2].zero_()
    origin = trace_nonfinite(model, Batch(args=(torch.randn(8, 4),)), mean_loss)

    assert (origin.stage, origin.module, origin.type) == ("backward", "(model)", "SqrtBetween")
    assert origin.detail.startswith("gradient at the output of its child a: ")
    assert origin.passed_on == ["a"]


def test_backward_origin_inside_a_residual_block_is_not_the_block(torch_seed):
    # The block's input gradient is not finite, but its child made it: the innermost is the origin.
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)
            self.sqrt = SqrtAbs()

        def forward(self, x):
            return x + self.sqrt(self.linear(x))

    model = nn.Sequential(nn.Linear(4, 4), Residual(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].linear.weight[:2].zero_()
        model[1].linear.bias[:2].zero_()
    origin = trace_nonfinite(model, Batch(args=(torch.randn(8, 4),)), mean_loss)

    assert (origin.stage, origin.module) == ("backward", "1.sqrt")
    assert origin.passed_on == ["1.linear", "0"]


def test_attention_mask_with_minus_inf_is_not_a_nan(torch_seed):
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    mask = nn.Transformer.generate_square_subsequent_mask(5)
    batch = Batch(args=(torch.randn(2, 5, 8),), kwargs={"src_mask": mask})
    assert trace_nonfinite(layer, batch, mean_loss) is None

    with torch.no_grad():
        layer.linear2.weight[0, 0] = float("nan")
    origin = trace_nonfinite(layer, batch, mean_loss)
    assert (origin.stage, origin.module) == ("forward", "linear2")
