"""Every choice set the CLI and the API accept, as enums (their values are the CLI spellings)."""

from enum import Enum


class Arch(str, Enum):
    MLP = "mlp"
    CNN = "cnn"
    RNN = "rnn"
    LSTM = "lstm"

    @property
    def recurrent(self) -> bool:
        return self in (Arch.RNN, Arch.LSTM)


class Activation(str, Enum):
    SIGMOID = "sigmoid"
    TANH = "tanh"
    RELU = "relu"
    LEAKY_RELU = "leaky_relu"
    ELU = "elu"
    SELU = "selu"
    GELU = "gelu"
    IDENTITY = "identity"

    @property
    def saturating(self) -> bool:
        return self in (Activation.SIGMOID, Activation.TANH)

    @property
    def relu_family(self) -> bool:
        return self in (Activation.RELU, Activation.LEAKY_RELU, Activation.ELU, Activation.GELU)


class Init(str, Enum):
    DEFAULT = "default"
    KAIMING = "kaiming"
    XAVIER = "xavier"
    ORTHOGONAL = "orthogonal"
    NORMAL = "normal"


class Norm(str, Enum):
    NONE = "none"
    BATCH = "batch"
    LAYER = "layer"


class LossKind(str, Enum):
    CE = "ce"
    MSE = "mse"
    SUM = "sum"
    MEAN = "mean"


class OutputFormat(str, Enum):
    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"  # a pull-request comment
    JUNIT = "junit"  # JUnit XML for test dashboards: one test case per target and check
    SARIF = "sarif"  # SARIF 2.1.0 for code-scanning uploads
    GITHUB = "github"  # GitHub Actions workflow commands (::error file=...::)


class Color(str, Enum):
    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class Severity(str, Enum):
    INFO = "info"  # worth knowing, never a failure (e.g. a zero-initialized layer blocking on purpose)
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}[self]


class FailOn(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    NEVER = "never"


class Verdict(str, Enum):
    """Ordered from best to worst: the report's verdict is the worst of its error findings."""

    HEALTHY = "healthy"
    VANISHING = "vanishing"
    EXPLODING = "exploding"
    NONFINITE = "nonfinite"

    @property
    def rank(self) -> int:
        return list(Verdict).index(self)


class TrialOutcome(str, Enum):
    """What a fix tried on a copy did to the verdict and the depth trend (--verify), best first."""

    CURED = "cured"
    HELPED = "helped"
    NO_CHANGE = "no change"
    WORSE = "worse"

    @property
    def rank(self) -> int:
        return list(TrialOutcome).index(self)


class FindingKind(str, Enum):
    VANISHING_GRADIENT = "vanishing_gradient"
    ZERO_GRADIENT = "zero_gradient"
    VANISHING_ACTIVATION = "vanishing_activation"
    VANISHING_THROUGH_TIME = "vanishing_through_time"
    EXPLODING_GRADIENT = "exploding_gradient"
    EXPLODING_ACTIVATION = "exploding_activation"
    LARGE_RELATIVE_GRADIENT = "large_relative_gradient"
    EXPLODING_THROUGH_TIME = "exploding_through_time"
    NONFINITE = "nonfinite"
    ZERO_INIT = "zero_init"  # exact-zero gradients from zero-initialized layers, by design (info)
    BASELINE_REGRESSION = "baseline_regression"  # worse than the saved baseline (--baseline)
    FP16_RANGE = "fp16_range"  # --amp: gradients outside fp16's range without loss scaling
    # growth toward the input at the rate normalization gives, forward signal flat (info, or a warning)
    NORMALIZED_GROWTH = "normalized_growth"

    @property
    def verdict(self) -> Verdict:
        """The health verdict this kind stands for. A zero-init note, a baseline regression and growth that
        normalization explains say nothing of their own against the model's health: the other findings do."""
        if self in (FindingKind.ZERO_INIT, FindingKind.BASELINE_REGRESSION, FindingKind.NORMALIZED_GROWTH):
            return Verdict.HEALTHY
        if self is FindingKind.NONFINITE:
            return Verdict.NONFINITE
        if self.value.startswith("vanishing") or self in (FindingKind.ZERO_GRADIENT, FindingKind.FP16_RANGE):
            return Verdict.VANISHING
        return Verdict.EXPLODING


class FixId(str, Enum):
    """Fix ids are public API (they appear in the JSON report)."""

    RELU = "relu"
    BATCHNORM = "batchnorm"
    RESIDUAL = "residual"
    CLIPPING = "clipping"
    LSTM = "lstm"
    INIT = "init"
    LEARNING_RATE = "learning_rate"
    LOSS_SCALING = "loss_scaling"
    SAFE_OP = "safe_op"  # keep an op inside its domain: log(x.clamp_min(eps)), a divisor away from 0 (issue 22)


class CauseId(str, Enum):
    """What a finding is attributed to; public API (the JSON report's ``causes[].id``)."""

    SATURATING_ACTIVATION = "saturating_activation"
    DEAD_RELU = "dead_relu"
    INIT_SCALE = "init_scale"
    NO_NORMALIZATION = "no_normalization"
    NORMALIZATION_WITHOUT_SKIPS = "normalization_without_skips"
    DEPTH_WITHOUT_SKIPS = "depth_without_skips"
    RESIDUAL_GROWTH = "residual_growth"
    RECURRENT_SPECTRAL_NORM = "recurrent_spectral_norm"
    UNGATED_RECURRENCE = "ungated_recurrence"
    MEMORY_GATE_BIAS = "memory_gate_bias"
    ZERO_INIT = "zero_init"
    LEARNING_RATE = "learning_rate"
    DOMAIN_ERROR = "domain_error"  # a NaN/Inf made by an op outside its domain: log of negatives, division by 0


class Device(str, Enum):
    AUTO = "auto"  # CUDA when torch can use it, else the CPU
    CPU = "cpu"
    CUDA = "cuda"


class Amp(str, Enum):
    """--amp: the passes run under torch.autocast in this dtype."""

    BF16 = "bf16"
    FP16 = "fp16"


class Optimizer(str, Enum):
    SGD = "sgd"
    ADAM = "adam"


class LayerStatus(str, Enum):
    OK = "ok"
    WEAK = "weak"  # backward signal 1–2 decades below the output end: a warning, not yet vanishing
    HIGH = "high"  # 1–2 decades above it, or a relative gradient past the warning line: not yet exploding
    VANISHING = "vanishing"
    EXPLODING = "exploding"
    ZERO = "zero"  # gradient exactly zero
    NONFINITE = "nonfinite"
    NO_GRAD = "no-grad"  # trainable, but autograd gave it no gradient
    FROZEN = "frozen"  # requires_grad=False everywhere
    NOT_RUN = "not-run"  # owns parameters but the forward pass never called it
    IGNORED = "ignored"  # matched an ignore pattern of the configuration: not judged

    @property
    def flagged(self) -> bool:
        return self in (
            LayerStatus.WEAK,
            LayerStatus.HIGH,
            LayerStatus.VANISHING,
            LayerStatus.EXPLODING,
            LayerStatus.ZERO,
            LayerStatus.NONFINITE,
            LayerStatus.NO_GRAD,
        )


class HistoryFormat(str, Enum):
    """Output formats of ``gradcheck report`` (a training run's history, written by the Monitor)."""

    TEXT = "text"
    JSON = "json"
