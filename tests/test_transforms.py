"""apply_fix_to_copy: each fix changes the copy as described, and the original stays bit-identical."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradcheck_cli.common.choices import FixId
from gradcheck_cli.trials.transforms import FixNotApplicable, Residual, apply_fix_to_copy

FORGET_BIAS = 4.0775  # ln(59): chrono init for 60 steps


def snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[tuple[str, type, bool]]]:
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    modules = [(name, type(module), module.training) for name, module in model.named_modules()]
    return state, modules


def assert_unchanged(model: nn.Module, before: tuple) -> None:
    state, modules = snapshot(model)
    assert state.keys() == before[0].keys()
    for name, tensor in state.items():
        assert tensor.dtype == before[0][name].dtype and torch.equal(tensor, before[0][name]), name
    assert modules == before[1]


def std_scale(layer: nn.Module) -> float:
    """std * sqrt(fan_in) of a layer's weight."""
    return layer.weight.std().item() * math.sqrt(layer.weight[0].numel())


def saturating_mlp(width: int = 256, depth: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(width, width), nn.Sigmoid() if i % 2 else nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def residual_candidate() -> nn.Sequential:
    """The brief's example: 6 width-preserving Linear+Tanh groups and a head."""
    layers: list[nn.Module] = []
    for _ in range(6):
        layers += [nn.Linear(32, 32), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(32, 10))


class Wrapped(nn.Module):
    """A user-style model: a Sequential as an attribute, a lone activation attribute, a ModuleList and
    a ModuleDict, and a head outside any Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 32))
        self.act = nn.Sigmoid()
        self.extra = nn.ModuleList([nn.Linear(32, 32), nn.Hardtanh()])
        self.gates = nn.ModuleDict({"squash": nn.Softsign()})
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.body(x))
        h = self.extra[1](self.extra[0](h))
        return self.head(self.gates["squash"](h))


class FunctionalSigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.sigmoid(self.fc1(x)))


class RNNClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(8, 16, num_layers=2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class Uncopyable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.batches = (i for i in range(3))  # a generator cannot be deep-copied


# --- relu


def test_relu_swaps_saturating_modules_everywhere_and_reinitializes_he(torch_seed):
    model = Wrapped()
    before = snapshot(model)
    fixed, description = apply_fix_to_copy(model, "relu", {"activation": "ReLU", "ignored": 1})
    types = [type(m) for m in fixed.modules()]
    assert not {nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softsign} & set(types)
    assert types.count(nn.ReLU) == 5
    assert description == (
        "1 Tanh, 2 Sigmoid, 1 Hardtanh, 1 Softsign -> ReLU; 5 Linear re-initialized (He normal, std sqrt(2/fan_in))"
    )
    for layer in (m for m in fixed.modules() if isinstance(m, nn.Linear)):
        assert torch.count_nonzero(layer.bias) == 0
    assert fixed(torch.randn(8, 16)).shape == (8, 10)
    assert_unchanged(model, before)


def test_relu_he_std_is_within_15_percent(torch_seed):
    fixed, _ = apply_fix_to_copy(saturating_mlp(), "relu", None)
    layer = fixed[0]
    assert std_scale(layer) == pytest.approx(math.sqrt(2.0), rel=0.15)


def test_relu_reinitializes_convolutions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.Tanh(), nn.Conv2d(64, 64, 3, padding=1))
    fixed, description = apply_fix_to_copy(model, "relu", None)
    assert description == "1 Tanh -> ReLU; 2 Conv2d re-initialized (He normal, std sqrt(2/fan_in))"
    assert std_scale(fixed[2]) == pytest.approx(math.sqrt(2.0), rel=0.15)


def test_relu_without_activation_modules_is_not_applicable():
    with pytest.raises(FixNotApplicable, match=r"^its activations are not modules .*as below\.$"):
        apply_fix_to_copy(FunctionalSigmoid(), "relu", None)


def test_relu_keeps_a_shared_activation_shared():
    shared = nn.Tanh()
    model = nn.Sequential(nn.Linear(4, 4), shared, nn.Linear(4, 4), shared)
    fixed, description = apply_fix_to_copy(model, "relu", None)
    assert fixed[1] is fixed[3] and isinstance(fixed[1], nn.ReLU)
    assert description.startswith("1 Tanh -> ReLU")


def test_relu_replaces_an_activation_that_is_the_whole_model():
    fixed, _ = apply_fix_to_copy(nn.Sigmoid(), "relu", None)
    assert isinstance(fixed, nn.ReLU)


# --- init


def test_init_scale_redraws_weights_at_the_target(torch_seed):
    model = saturating_mlp()
    before = snapshot(model)
    fixed, description = apply_fix_to_copy(model, "init", {"scheme": "scale", "target": 1.0})
    assert description == "4 Linear re-initialized (normal, std 1/sqrt(fan_in)), biases zeroed"
    assert std_scale(fixed[0]) == pytest.approx(1.0, rel=0.15)
    assert std_scale(fixed[2]) == pytest.approx(1.0, rel=0.15)
    assert torch.count_nonzero(fixed[0].bias) == 0
    assert_unchanged(model, before)


def test_init_scale_without_weighted_layers_is_not_applicable():
    with pytest.raises(FixNotApplicable, match=r"no nn\.Linear or nn\.Conv1d/2d/3d layer.*\.$"):
        apply_fix_to_copy(nn.Sequential(nn.LSTM(4, 4)), "init", {"scheme": "scale", "target": 1.414})


def test_init_gate_bias_sets_forget_rows_of_every_layer_and_direction(torch_seed):
    model = nn.LSTM(8, 16, num_layers=2, bidirectional=True)
    before = snapshot(model)
    params = {"scheme": "gate_bias", "gate": "forget", "forget_bias": FORGET_BIAS}
    fixed, description = apply_fix_to_copy(model, "init", params)
    assert description == "1 LSTM forget-gate bias set to 4.08"
    h = 16
    for name, bias in fixed.named_parameters():
        original = dict(model.named_parameters())[name]
        if name.startswith("bias_ih"):
            assert torch.all(bias[h : 2 * h] == FORGET_BIAS)
        elif name.startswith("bias_hh"):
            assert torch.all(bias[h : 2 * h] == 0)
        else:
            continue
        # The other gates keep their values.
        assert torch.equal(bias[:h], original[:h]) and torch.equal(bias[2 * h :], original[2 * h :])
    assert_unchanged(model, before)


def test_init_gate_bias_sets_the_gru_update_gate():
    model = nn.Sequential(nn.GRU(4, 8, batch_first=True))
    fixed, description = apply_fix_to_copy(model, "init", {"scheme": "gate_bias", "gate": "update", "forget_bias": 2.0})
    assert description == "1 GRU update-gate bias set to 2"
    assert torch.all(fixed[0].bias_ih_l0[8:16] == 2.0) and torch.all(fixed[0].bias_hh_l0[8:16] == 0)


def test_init_gate_bias_without_the_gated_cell_is_not_applicable():
    params = {"scheme": "gate_bias", "gate": "forget", "forget_bias": 2.0}
    with pytest.raises(FixNotApplicable, match=r"^it has no nn\.LSTM module.*\.$"):
        apply_fix_to_copy(nn.GRU(4, 8), "init", params)
    with pytest.raises(FixNotApplicable, match=r"bias=False.*\.$"):
        apply_fix_to_copy(nn.LSTM(4, 8, bias=False), "init", params)


def test_init_orthogonal_makes_each_gate_block_orthogonal():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LSTM(8, 16, num_layers=2), nn.RNN(16, 16))
    before = snapshot(model)
    fixed, description = apply_fix_to_copy(model, "init", {"scheme": "orthogonal"})
    assert description == (
        "1 LSTM weight_hh re-initialized (orthogonal, each of 4 gate blocks); 1 RNN weight_hh re-initialized (orthogonal)"
    )
    for module in fixed:
        for name, weight in module.named_parameters():
            if name.startswith("weight_hh"):
                for block in weight.detach().split(16):
                    assert torch.allclose(block @ block.T, torch.eye(16), atol=1e-5), name
    assert_unchanged(model, before)


def test_init_orthogonal_without_recurrent_layers_is_not_applicable():
    with pytest.raises(FixNotApplicable, match=r"no nn\.RNN, nn\.LSTM or nn\.GRU.*\.$"):
        apply_fix_to_copy(saturating_mlp(8), "init", {"scheme": "orthogonal"})


# --- batchnorm


def test_batchnorm_inserted_after_each_linear_but_the_head(torch_seed):
    model = saturating_mlp(32)
    before = snapshot(model)
    fixed, description = apply_fix_to_copy(model, "batchnorm", None)
    assert description == "3 BatchNorm1d inserted after Linear layers"
    assert [type(m).__name__ for m in fixed] == [
        "Linear", "BatchNorm1d", "Tanh", "Linear", "BatchNorm1d", "Sigmoid", "Linear", "BatchNorm1d", "Tanh", "Linear",
    ]  # fmt: skip
    assert fixed(torch.randn(8, 32)).shape == (8, 10)
    assert_unchanged(model, before)


def test_batchnorm_skips_layers_already_normalized_and_nests():
    model = Wrapped()
    model.body[1] = nn.LayerNorm(32)  # Linear, LayerNorm, Linear, Sigmoid, Linear
    fixed, description = apply_fix_to_copy(model, "batchnorm", None)
    # The head is outside the Sequential, so the Sequential's last Linear gets a norm too.
    assert description == "2 BatchNorm1d inserted after Linear layers"
    assert [type(m).__name__ for m in fixed.body] == [
        "Linear", "LayerNorm", "Linear", "BatchNorm1d", "Sigmoid", "Linear", "BatchNorm1d",
    ]  # fmt: skip
    assert fixed(torch.randn(8, 16)).shape == (8, 10)


def test_batchnorm_matches_convolution_dims_dtype_and_mode():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
    ).double().eval()  # fmt: skip
    fixed, description = apply_fix_to_copy(model, "batchnorm", {"norm": "batch"})
    assert description == "2 BatchNorm2d inserted after Conv2d layers"
    norms = [m for m in fixed if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 2 and all(n.weight.dtype == torch.float64 and not n.training for n in norms)
    assert fixed(torch.randn(2, 3, 4, 4, dtype=torch.float64)).shape == (2, 10)


def test_batchnorm_layer_norm_variant():
    fixed, description = apply_fix_to_copy(saturating_mlp(32), "batchnorm", {"norm": "layer"})
    assert description == "3 LayerNorm inserted after Linear layers"
    assert isinstance(fixed[1], nn.LayerNorm) and fixed[1].normalized_shape == (32,)
    assert fixed(torch.randn(8, 32)).shape == (8, 10)


def test_batchnorm_outside_a_sequential_is_not_applicable():
    with pytest.raises(FixNotApplicable, match=r"^its layers are not in an nn\.Sequential.*as below\.$"):
        apply_fix_to_copy(FunctionalSigmoid(), "batchnorm", None)


def test_batchnorm_when_every_layer_is_normalized_is_not_applicable():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(FixNotApplicable, match=r"already followed by a normalization layer.*\.$"):
        apply_fix_to_copy(model, "batchnorm", None)


# --- lstm


def test_lstm_replaces_the_rnn_keeping_shapes_and_batch_first(torch_seed):
    model = RNNClassifier()
    before = snapshot(model)
    x = torch.randn(4, 7, 8)
    fixed, description = apply_fix_to_copy(model, "lstm", {"forget_bias": FORGET_BIAS})
    assert description == "1 RNN -> LSTM (forget bias 4.08); its hidden state is now a (h, c) tuple"
    lstm = fixed.rnn
    assert type(lstm) is nn.LSTM and lstm.batch_first and lstm.num_layers == 2 and lstm.hidden_size == 16
    assert torch.all(lstm.bias_ih_l1[16:32] == FORGET_BIAS) and torch.all(lstm.bias_hh_l1[16:32] == 0)
    assert fixed(x).shape == model(x).shape
    assert lstm(x)[0].shape == model.rnn(x)[0].shape
    assert_unchanged(model, before)


def test_lstm_keeps_dtype_and_mode():
    model = RNNClassifier().double().eval()
    fixed, _ = apply_fix_to_copy(model, "lstm", {"forget_bias": 1.0})
    assert fixed.rnn.weight_hh_l0.dtype == torch.float64 and not fixed.rnn.training
    assert fixed(torch.randn(2, 5, 8, dtype=torch.float64)).shape == (2, 3)


def test_lstm_without_an_rnn_is_not_applicable():
    with pytest.raises(FixNotApplicable, match=r"^it has no nn\.RNN module.*\.$"):
        apply_fix_to_copy(nn.Sequential(nn.LSTM(4, 4)), "lstm", {"forget_bias": 1.0})


# --- residual


def test_residual_wraps_the_six_same_width_groups_but_not_the_head(torch_seed):
    model = residual_candidate()
    before = snapshot(model)
    fixed, description = apply_fix_to_copy(model, "residual", None)
    assert description == "6 Linear groups wrapped as x + body(x)"
    children = list(fixed)
    assert len(children) == 7
    assert all(isinstance(block, Residual) for block in children[:6])
    assert [type(m) for m in children[0].body] == [nn.Linear, nn.Tanh]
    assert type(children[6]) is nn.Linear and children[6].out_features == 10
    x = torch.randn(8, 32)
    assert torch.equal(children[0](x), x + children[0].body(x))
    assert fixed(x).shape == (8, 10)
    assert_unchanged(model, before)


def test_residual_groups_stop_at_shape_changing_modules():
    conv = [nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()]
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), *conv, nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.Flatten(), nn.Linear(8 * 2 * 2, 10),
    )  # fmt: skip
    fixed, description = apply_fix_to_copy(model, "residual", None)
    assert description == "2 Conv2d groups wrapped as x + body(x)"
    assert [type(m).__name__ for m in fixed] == [
        "Conv2d", "ReLU", "Residual", "MaxPool2d", "Residual", "Conv2d", "Flatten", "Linear",
    ]  # fmt: skip
    assert [type(m) for m in fixed[2].body] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert fixed(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_residual_inside_a_custom_module():
    model = Wrapped()
    model.body = residual_candidate()[:-1]  # Sequential of 6 groups; the head is an attribute
    model.body[0] = nn.Linear(16, 32)
    fixed, description = apply_fix_to_copy(model, "residual", None)
    assert description == "5 Linear groups wrapped as x + body(x)"
    assert fixed(torch.randn(8, 16)).shape == (8, 10)


def test_residual_with_fewer_than_two_groups_is_not_applicable():
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 10))
    with pytest.raises(FixNotApplicable, match=r"^residual connections change the forward code.*as below\.$"):
        apply_fix_to_copy(model, "residual", None)


# --- common


@pytest.mark.parametrize(
    ("fix_id", "params"),
    [
        ("relu", None),
        ("init", {"scheme": "scale", "target": 1.414}),
        ("batchnorm", None),
        ("residual", None),
    ],
)
def test_the_original_is_bit_identical_and_modes_are_kept(fix_id, params):
    model = residual_candidate().eval()
    before = snapshot(model)
    fixed, _ = apply_fix_to_copy(model, fix_id, params)
    assert fixed is not model
    assert not any(module.training for module in fixed.modules())
    assert_unchanged(model, before)


def test_draws_are_deterministic_under_a_seed():
    model = saturating_mlp(32)
    torch.manual_seed(3)
    first, _ = apply_fix_to_copy(model, "relu", None)
    torch.manual_seed(3)
    second, _ = apply_fix_to_copy(model, "relu", None)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_a_model_that_cannot_be_copied_is_not_applicable():
    with pytest.raises(FixNotApplicable, match=r"^the model cannot be copied \(deepcopy failed: .*by hand\.$"):
        apply_fix_to_copy(Uncopyable(), "init", {"scheme": "scale", "target": 1.0})


def test_fix_id_enum_members_are_accepted():
    _, description = apply_fix_to_copy(saturating_mlp(8), FixId.RELU, None)
    assert "-> ReLU" in description


@pytest.mark.parametrize("fix_id", ["clipping", "dropout"])
def test_clipping_and_unknown_ids_are_value_errors(fix_id):
    with pytest.raises(ValueError):
        apply_fix_to_copy(saturating_mlp(8), fix_id, None)


def test_missing_params_are_value_errors():
    with pytest.raises(ValueError, match="scheme"):
        apply_fix_to_copy(saturating_mlp(8), "init", None)
    with pytest.raises(ValueError, match="forget_bias"):
        apply_fix_to_copy(RNNClassifier(), "lstm", {})


def test_residual_between_recurrent_layers_is_not_applied_even_beside_wrappable_linears():
    """The recurrent-stack residual fix needs the stack split into modules: it is never confused with the
    Sequential-wrapping residual fix, which a model with same-width Linear groups would otherwise take."""

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(8, 8, num_layers=4, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))

    params = {"scheme": "between_recurrent_layers"}
    with pytest.raises(FixNotApplicable, match=r"^the stacked layers are one recurrent module .*code below\.$"):
        apply_fix_to_copy(Tagger(), FixId.RESIDUAL, params)
    apply_fix_to_copy(Tagger(), FixId.RESIDUAL, {})  # the plain residual fix still wraps the Linear groups
