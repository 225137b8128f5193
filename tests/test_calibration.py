"""Calibration: models whose gradient behaviour at initialization is published, each checked through the
public API (`check_model`) against the verdict the literature predicts.

The models are built here, independently of `gradcheck_cli.trials.presets`, so that a bug shared by the presets
and the diagnosis cannot hide. Where theory gives a number (the per-layer gain of the backward signal,
sqrt(chi) in mean-field terms, chi = fan_in * Var(W) * E[phi'(h)^2]; Schoenholz et al. 2017), it is
asserted next to the verdict. Every tolerance was set after measuring (torch 2.13 CPU, seed 0, 2 passes;
checked stable over model seeds 0-11), and the measured numbers sit beside each assert. D is `profile.decades` (log10 of the backward signal at
the input end over the output end: < 0 vanishing, > 0 exploding), gain is `profile.gain_per_layer`.
"""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.choices import FindingKind, LayerStatus, Severity, Verdict
from gradcheck_cli.examine.check_model import check_model

CLASSES = 10
WIDTH = 128
DEPTH = 30
BATCH = 64
PASSES = 2
SEED = 0

# PyTorch's default nn.Linear init is U(+-1/sqrt(fan_in)): Var(W) = 1/(3 fan_in), so fan_in * Var(W) = 1/3.
DEFAULT_INIT_SCALE = math.sqrt(1 / 3)


# ---------------------------------------------------------------------------------------------------------
# Helpers: batches, loss, the check itself, and the model builders.


def cross_entropy(output, batch):
    return F.cross_entropy(output, batch.target)


def random_batches(*shape):
    """A make_batch of standard-normal inputs and random labels, drawn from the global RNG, which
    check_model seeds with `seed` before the passes (so every run sees the same batches)."""

    def make_batch(index):
        x = torch.randn(*shape)
        return Batch(args=(x,), target=torch.randint(0, CLASSES, (x.shape[0],)))

    return make_batch


def check(model, make_batch):
    return check_model(model, make_batch, cross_entropy, passes=PASSES, seed=SEED)


def errors(report):
    return [f for f in report.diagnosis.findings if f.severity is Severity.ERROR]


def he_normal(weight):
    nn.init.kaiming_normal_(weight, nonlinearity="relu")


def lecun_normal(weight):
    nn.init.normal_(weight, std=1 / math.sqrt(weight.shape[1]))


def scaled_normal(gain):
    def init(weight):
        nn.init.normal_(weight, std=gain / math.sqrt(weight.shape[1]))

    return init


class Block(nn.Module):
    """Linear -> (BatchNorm) -> activation, optionally added to its input: x + f(x)."""

    def __init__(self, width, activation, init, batchnorm, residual):
        super().__init__()
        self.layer = nn.Linear(width, width)
        if init is not None:
            init(self.layer.weight)
            nn.init.zeros_(self.layer.bias)
        self.norm = nn.BatchNorm1d(width) if batchnorm else nn.Identity()
        self.act = activation() if activation is not None else nn.Identity()
        self.residual = residual

    def forward(self, x):
        h = self.act(self.norm(self.layer(x)))
        return x + h if self.residual else h


class PreActivationBlock(nn.Module):
    """x + W relu(BN(x)): the pre-activation residual unit of He et al. 2016b (Identity mappings)."""

    def __init__(self, width):
        super().__init__()
        self.norm = nn.BatchNorm1d(width)
        self.act = nn.ReLU()
        self.layer = nn.Linear(width, width)

    def forward(self, x):
        return x + self.layer(self.act(self.norm(x)))


class MLP(nn.Module):
    def __init__(self, blocks, width):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, x):
        return self.head(self.blocks(x))


def mlp(activation, init=None, *, depth=DEPTH, width=WIDTH, batchnorm=False, residual=False):
    torch.manual_seed(SEED)
    return MLP([Block(width, activation, init, batchnorm, residual) for _ in range(depth)], width)


def check_mlp(model, width=WIDTH):
    return check(model, random_batches(BATCH, width))


# ---------------------------------------------------------------------------------------------------------
# 1-3. Saturating and rectifying MLPs under PyTorch's default init and under the init made for them.


def test_sigmoid_mlp_with_default_init_vanishes():
    """Glorot & Bengio 2010 (section 3.1, Fig. 2): deep sigmoid nets saturate and their lower layers stop
    learning. Mean field: sigmoid' <= 0.25 and its pre-activations stay near 0 (Var(h) ~ 1/3 * E[a^2]
    ~ 0.09), so the gain is sqrt(1/3) * 0.247 ~ 0.142 per layer, ~0.85 decades lost per layer."""
    report = check_mlp(mlp(nn.Sigmoid))
    profile = report.diagnosis.profile
    assert report.verdict is Verdict.VANISHING
    assert profile.decades < -2  # measured: D -22.95
    assert profile.gain_per_layer == pytest.approx(0.142, rel=0.1)  # measured: gain 0.1413
    assert errors(report)[0].kind is FindingKind.VANISHING_GRADIENT


def test_tanh_mlp_with_default_init_vanishes():
    """Glorot & Bengio 2010: with the "standard" init U(+-1/sqrt(n)) the back-propagated gradient shrinks
    layer after layer (section 4.2, Fig. 7). tanh'(0) = 1, so the gain is about the weight scale
    sqrt(1/3) = 0.577, a little less where pre-activations leave 0."""
    report = check_mlp(mlp(nn.Tanh))
    profile = report.diagnosis.profile
    assert report.verdict is Verdict.VANISHING
    assert profile.decades < -2  # measured: D -6.54
    assert profile.gain_per_layer == pytest.approx(DEFAULT_INIT_SCALE, rel=0.1)  # measured: gain 0.574


def test_tanh_mlp_with_xavier_normal_init_is_healthy():
    """Glorot & Bengio 2010, eq. 16 ("normalized initialization"): Var(W) = 2 / (fan_in + fan_out) keeps
    the back-propagated variance roughly constant across layers (section 4.2, Fig. 7). For square layers
    fan_in * Var(W) = 1, so the gain is E[tanh'(h)^2]^(1/2), slightly below 1."""
    report = check_mlp(mlp(nn.Tanh, nn.init.xavier_normal_))
    profile = report.diagnosis.profile
    assert report.verdict is Verdict.HEALTHY
    assert abs(profile.decades) < 1  # measured: D -0.56
    assert 0.9 < profile.gain_per_layer <= 1.0  # measured: gain 0.969


def test_relu_mlp_with_he_init_is_healthy():
    """He et al. 2015, eq. 10: Var(W) = 2 / fan_in exactly compensates ReLU halving the second moment, so
    the backward signal keeps its size through depth: gain 1."""
    report = check_mlp(mlp(nn.ReLU, he_normal))
    profile = report.diagnosis.profile
    assert report.verdict is Verdict.HEALTHY
    assert abs(profile.decades) < 1  # measured: D +0.16
    assert 0.9 <= profile.gain_per_layer <= 1.1  # measured: gain 1.014


def test_relu_mlp_with_default_init_vanishes():
    """He et al. 2015 (section 2.2): a ReLU net needs fan_in * Var(W) = 2. PyTorch's default gives 1/3, a
    sixth of it, so each layer multiplies the backward signal by sqrt(1/6) = 0.408."""
    report = check_mlp(mlp(nn.ReLU))
    profile = report.diagnosis.profile
    assert report.verdict is Verdict.VANISHING
    assert profile.decades < -2  # measured: D -10.48
    assert profile.gain_per_layer == pytest.approx(math.sqrt(1 / 6), rel=0.1)  # measured: gain 0.411


# ---------------------------------------------------------------------------------------------------------
# 4. Deep linear nets: the gain is the weight scale, exactly.


def test_deep_linear_net_with_gain_1_5_explodes_while_weight_gradients_stay_flat():
    """A linear net with W ~ N(0, g^2 / fan_in) multiplies the backward signal by g per layer (Saxe et al.
    2014; Glorot & Bengio 2010 section 4.2.1, the linear regime). With g = 1.5 it explodes, yet the weight-gradient norms stay
    flat, because ||dL/dW_l|| ~ ||delta_l|| * ||a_(l-1)|| and the activations shrink going down exactly as
    delta grows (Glorot & Bengio 2010, section 4.2.1): a rule reading weight gradients would miss it."""
    report = check_mlp(mlp(None, scaled_normal(1.5)))
    profile = report.diagnosis.profile
    assert report.verdict is Verdict.EXPLODING
    assert profile.decades > 2  # measured: D +4.86 (theory 29 * log10(1.5) = 5.1 between the two ends)
    assert profile.gain_per_layer == pytest.approx(1.5, rel=0.05)  # measured: gain 1.513
    assert errors(report)[0].kind is FindingKind.EXPLODING_GRADIENT
    first, last = report.result.layer("blocks.0.layer"), report.result.layer(f"blocks.{DEPTH - 1}.layer")
    assert 0.1 < first.weight_grad_norm / last.weight_grad_norm < 10  # measured: 0.63


def test_deep_linear_net_with_gain_0_7_vanishes():
    """The same linear net with g = 0.7: the backward signal shrinks by 0.7 per layer (Saxe et al. 2014)."""
    report = check_mlp(mlp(None, scaled_normal(0.7)))
    profile = report.diagnosis.profile
    assert report.verdict is Verdict.VANISHING
    assert profile.decades < -2  # measured: D -4.09
    assert profile.gain_per_layer == pytest.approx(0.7, rel=0.05)  # measured: gain 0.705


def test_deep_linear_net_with_orthogonal_init_is_healthy():
    """Saxe et al. 2014: orthogonal weights make a deep linear net an isometry (every singular
    value of the input-output Jacobian is 1, "dynamical isometry"), so the backward signal keeps its norm
    exactly, not only on average."""
    report = check_mlp(mlp(None, nn.init.orthogonal_))
    profile = report.diagnosis.profile
    assert report.verdict is Verdict.HEALTHY
    assert abs(profile.decades) < 0.5  # measured: D +8e-8
    assert profile.gain_per_layer == pytest.approx(1.0, abs=1e-3)  # measured: gain 1.0000000


# ---------------------------------------------------------------------------------------------------------
# 5. BatchNorm without and with skip connections.


def test_relu_batchnorm_mlp_without_skips_explodes():
    """Yang et al. 2019 (A mean field theory of batch normalization): gradients of a deep BatchNorm net
    without skip connections explode at initialization, growing toward the input, whatever the init or
    activation. For ReLU in the large-batch limit the squared gradient grows by pi / (pi - 1) per layer:
    a gain of sqrt(pi / (pi - 1)) = 1.211; finite batches explode a little faster (their Thm 3.10: the rate depends on B)."""
    report = check_mlp(mlp(nn.ReLU, depth=40, batchnorm=True))
    profile = report.diagnosis.profile
    assert report.verdict is Verdict.EXPLODING
    assert profile.decades > 2  # measured: D +3.10
    assert profile.gain_per_layer == pytest.approx(math.sqrt(math.pi / (math.pi - 1)), rel=0.1)  # measured: 1.216
    assert errors(report)[0].kind is FindingKind.EXPLODING_GRADIENT


@pytest.mark.parametrize(
    "build",
    [
        # x + relu(BN(W x)): the same blocks as above with a skip around each. measured: D +1.41, gain
        # 1.070, forward F +1.09 (the residual stream grows): an exploding_gradient warning, no error.
        pytest.param(lambda: mlp(nn.ReLU, depth=40, batchnorm=True, residual=True), id="post-activation"),
        # x + W relu(BN(x)) (He et al. 2016b). measured: D +0.45, gain 1.025, no finding.
        pytest.param(
            lambda: (torch.manual_seed(SEED), MLP([PreActivationBlock(WIDTH) for _ in range(40)], WIDTH))[1],
            id="pre-activation",
        ),
    ],
)
def test_relu_batchnorm_mlp_with_residual_blocks_is_healthy(build):
    """Yang et al. 2019 (section 5 and their discussion of ResNets): skip connections remove BatchNorm's
    gradient explosion; the identity path carries the gradient down unchanged (He et al. 2016, 2016b)."""
    report = check_mlp(build())
    assert report.verdict is Verdict.HEALTHY
    assert report.diagnosis.profile.decades < 2  # measured: +1.41 (post-activation), +0.45 (pre-activation)
    assert not errors(report)


# ---------------------------------------------------------------------------------------------------------
# 6. The gradient through time.

STEPS, INPUTS, HIDDEN, SEQ_BATCH = 64, 16, 64, 32


class LastStepClassifier(nn.Module):
    """A recurrent layer and a linear head on its last step's output: the loss sees only step T."""

    def __init__(self, recurrent):
        super().__init__()
        self.rnn = recurrent
        self.head = nn.Linear(recurrent.hidden_size, CLASSES)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def tanh_rnn():
    torch.manual_seed(SEED)
    return LastStepClassifier(nn.RNN(INPUTS, HIDDEN, batch_first=True))


def chrono_lstm():
    """An LSTM whose forget-gate bias is ln(T - 1) (the constant form of chrono initialization, Tallec &
    Ollivier 2018): the forget gate starts at (T - 1) / T, so the cell state keeps a memory of ~T steps."""
    torch.manual_seed(SEED)
    lstm = nn.LSTM(INPUTS, HIDDEN, batch_first=True)
    forget = slice(HIDDEN, 2 * HIDDEN)  # PyTorch's gate order: input, forget, cell, output
    with torch.no_grad():
        lstm.bias_ih_l0[forget] = math.log(STEPS - 1)
        lstm.bias_hh_l0[forget] = 0.0
    return LastStepClassifier(lstm)


def check_sequence(model):
    return check(model, random_batches(SEQ_BATCH, STEPS, INPUTS))


def through_time(report):
    return [f for f in report.diagnosis.findings if f.kind is FindingKind.VANISHING_THROUGH_TIME]


def test_tanh_rnn_gradient_vanishes_through_time():
    """Bengio, Simard & Frasconi 1994: when the recurrent Jacobian's spectral radius is below 1, the
    gradient reaching early time steps decays exponentially in the distance to the loss. PyTorch's default
    W_hh ~ U(+-1/sqrt(H)) has H * Var(W) = 1/3, so per step the backward signal is multiplied by about
    sqrt(1/3 * E[tanh'(h)^2]) ~ 0.54 (tanh' < 1 where the input pushes h off 0)."""
    report = check_sequence(tanh_rnn())
    (finding,) = through_time(report)
    assert finding.severity is Severity.ERROR
    assert finding.evidence["decades"] < -2  # measured: -16.10 over 64 steps
    # measured: 0.563 (0.51-0.60 over seeds 0-11: a 64-unit W_hh fluctuates)
    assert finding.evidence["gain_per_step"] == pytest.approx(0.54, rel=0.15)
    assert report.verdict is Verdict.VANISHING


def test_lstm_with_chrono_forget_bias_keeps_the_gradient_through_time():
    """Hochreiter & Schmidhuber 1997: the LSTM's additive cell state carries the gradient across long
    lags; with the forget gate held near 1 (Tallec & Ollivier 2018) it barely decays over T steps."""
    rnn = check_sequence(tanh_rnn())
    report = check_sequence(chrono_lstm())
    assert not through_time(report)  # measured: an exploding_through_time profile of +0.42 decades, no finding
    assert report.verdict is Verdict.HEALTHY
    (lstm_profile,) = report.diagnosis.time_profiles
    (rnn_profile,) = rnn.diagnosis.time_profiles
    assert lstm_profile.decades > -1  # measured: +0.42, gain per step 1.032
    assert lstm_profile.decades - rnn_profile.decades > 10  # measured: +0.42 vs -16.10


# ---------------------------------------------------------------------------------------------------------
# 7. Transformers at initialization.

VOCAB, TOKENS, D_MODEL, HEADS, LAYERS = 100, 16, 64, 4, 6


class Encoder(nn.Module):
    """Token embedding, a TransformerEncoder, (a final LayerNorm for Pre-LN), mean pooling, a linear head."""

    def __init__(self, norm_first):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D_MODEL)
        layer = nn.TransformerEncoderLayer(
            D_MODEL, HEADS, 4 * D_MODEL, dropout=0.0, batch_first=True, norm_first=norm_first
        )
        self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(D_MODEL) if norm_first else nn.Identity()
        self.head = nn.Linear(D_MODEL, CLASSES)

    def forward(self, tokens):
        return self.head(self.norm(self.encoder(self.embed(tokens))).mean(dim=1))


def token_batches(index):
    tokens = torch.randint(0, VOCAB, (BATCH // 2, TOKENS))
    return Batch(args=(tokens,), target=torch.randint(0, CLASSES, (tokens.shape[0],)))


@pytest.mark.parametrize(
    "norm_first",
    [
        pytest.param(True, id="pre-ln"),  # measured: healthy, D +0.42, gain 1.227, no finding
        pytest.param(False, id="post-ln"),  # measured: healthy, D +0.20, gain 1.132, no finding
    ],
)
def test_transformer_encoder_is_healthy_at_initialization(norm_first):
    """Xiong et al. 2020 (On layer normalization in the Transformer architecture): at initialization both
    Pre-LN and Post-LN have well-behaved gradients across 6 layers; Post-LN's risk is the size of the
    last layers' gradients relative to Pre-LN (their Thm 1), handled by warm-up, not a depth trend. The
    attention q/k projections get small gradients at initialization (softmax over near-zero logits is
    almost uniform): by design, and they must not be flagged."""
    torch.manual_seed(SEED)
    report = check(Encoder(norm_first), token_batches)
    assert report.verdict is Verdict.HEALTHY
    assert abs(report.diagnosis.profile.decades) < 1  # measured: +0.42 (pre-ln), +0.20 (post-ln)
    attention = [name for name in report.diagnosis.statuses if name.endswith("self_attn")]
    assert len(attention) == LAYERS
    assert all(report.diagnosis.statuses[name] is LayerStatus.OK for name in attention)


# ---------------------------------------------------------------------------------------------------------
# 8. A small ResNet.


class BasicBlock(nn.Module):
    """relu(x + BN(conv(relu(BN(conv(x)))))): the identity-shortcut block of He et al. 2016."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    def __init__(self, channels=16, blocks=6):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.blocks = nn.Sequential(*[BasicBlock(channels) for _ in range(blocks)])
        self.head = nn.Linear(channels, CLASSES)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # He et al. 2015 init, as the ResNet paper uses
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        h = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.head(h.mean(dim=(2, 3)))


def test_resnet_with_batchnorm_and_identity_shortcuts_is_healthy():
    """He et al. 2016 (Deep residual learning): identity shortcuts with BatchNorm let the gradient reach
    the first block without vanishing or exploding."""
    torch.manual_seed(SEED)
    report = check(ResNet(), random_batches(BATCH // 2, 3, 16, 16))
    # measured: D +0.88, gain 1.44 over the 6 blocks' conv1 (seeds 0-11: D +0.88 to +1.02, some with an
    # exploding_gradient warning). The 1/rms(x_l) factor of each block's first BatchNorm shrinks the signal
    # deeper down as the residual stream grows (De & Smith 2020), so D grows with depth like log(depth).
    assert report.verdict is Verdict.HEALTHY
    assert not errors(report)


# ---------------------------------------------------------------------------------------------------------
# 9. Self-normalizing networks.


def test_selu_mlp_with_lecun_normal_init_is_healthy():
    """Klambauer et al. 2017 (Self-normalizing neural networks): SELU with LeCun normal weights,
    Var(W) = 1 / fan_in, has an attracting fixed point at mean 0, variance 1, and the backward signal
    keeps its size; mean field puts the gain just above 1 (~1.035)."""
    report = check_mlp(mlp(nn.SELU, lecun_normal, depth=40))
    profile = report.diagnosis.profile
    assert report.verdict is Verdict.HEALTHY
    assert abs(profile.decades) < 1  # measured: D +0.55
    assert 1.0 < profile.gain_per_layer < 1.1  # measured: gain 1.034
