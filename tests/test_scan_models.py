"""`gradcheck scan` on real models through the Python API: input inference, example inputs and input
options, output and loss selection, recurrent time-step profiles, and the verdicts on real architectures.

Every model is tiny (CPU, well under a second each). Model files are written to tmp_path and scanned with
``scan_target``; the global RNG is seeded before each scan, because the file builds its weights from it.
Regression tests for the bugs these tests found keep the names they were written under.
"""

import collections
import dataclasses
import math
import textwrap

import pytest
import torch
from torch import nn

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.choices import FindingKind, LayerStatus, LossKind, Severity, Verdict
from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.common.options import InputOptions, ScanOptions, parse_shape
from gradcheck_cli.examine.check_model import check_model
from gradcheck_cli.load.inputs import plan_inputs
from gradcheck_cli.load.objective import Objective, select_output
from gradcheck_cli.scan.scan import scan_target

OPTION_NAMES = ("--input-shape", "--vocab-size", "example_inputs")


def write_model(tmp_path, source, name="model.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def scan(tmp_path, source, *, weights_seed=0, name="model.py", **options):
    """Scan a model file; the weights come from the global RNG when the file builds the model."""
    target = write_model(tmp_path, source, name)
    torch.manual_seed(weights_seed)
    return scan_target(target, ScanOptions(**options))


def plan(model, options=None, namespace=None):
    return plan_inputs(model, namespace or {}, options or InputOptions())


def errors(report):
    return [f for f in report.diagnosis.findings if f.severity is Severity.ERROR]


def kinds(report):
    return {f.kind for f in report.diagnosis.findings}


def context(report):
    return dict(report.context)


# ---------------------------------------------------------------------------------------------------------
# 1. Input inference from the first layer that consumes the input


def test_linear_first_gives_a_batch_of_8_by_in_features():
    p = plan(nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2)))
    batch = p.make_batch(0)
    (x,) = batch.args
    assert x.shape == (8, 5) and x.dtype == torch.float32
    assert p.assumed
    assert "in_features=5" in p.description and "(Linear)" in p.description and "(8, 5)" in p.description


@pytest.mark.parametrize(
    "conv, shape",
    [
        (nn.Conv1d(2, 4, 3), (8, 2, 32)),
        (nn.Conv2d(3, 4, 3), (8, 3, 32, 32)),
        (nn.Conv3d(3, 4, 3), (8, 3, 8, 8, 8)),
    ],
    ids=["conv1d", "conv2d", "conv3d"],
)
def test_conv_first_gives_in_channels_and_a_small_spatial_size(conv, shape):
    p = plan(nn.Sequential(conv, nn.ReLU()))
    (x,) = p.make_batch(0).args
    assert x.shape == shape and x.is_floating_point()
    assert f"in_channels={conv.in_channels}" in p.description
    assert type(conv).__name__ in p.description


def test_embedding_first_gives_int64_tokens_below_num_embeddings_without_grad():
    p = plan(nn.Sequential(nn.Embedding(50, 4), nn.Linear(4, 2)))
    for index in range(3):
        (tokens,) = p.make_batch(index).args
        assert tokens.dtype == torch.int64 and tokens.shape == (8, 16)
        assert 0 <= tokens.min() and tokens.max() < 50
        assert not tokens.requires_grad
    assert "num_embeddings=50" in p.description and "below 50" in p.description


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU], ids=lambda c: c.__name__)
def test_recurrent_first_gives_a_short_sequence_in_the_layers_order(cls, batch_first):
    p = plan(cls(6, 8, batch_first=batch_first))
    (x,) = p.make_batch(0).args
    assert x.shape == ((8, 16, 6) if batch_first else (16, 8, 6))
    assert x.is_floating_point()
    assert "input_size=6" in p.description and "16 steps" in p.description
    assert ("batch-first" if batch_first else "time-major") in p.description


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
def test_transformer_encoder_gives_d_model_in_the_layers_order(batch_first):
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=batch_first)
    p = plan(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))
    (x,) = p.make_batch(0).args
    assert x.shape == ((8, 16, 16) if batch_first else (16, 8, 16))
    assert "embed_dim=16" in p.description and "TransformerEncoderLayer" in p.description


@pytest.mark.parametrize(
    "model",
    [nn.RNN(6, 8), nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32), 1, enable_nested_tensor=False)],
    ids=["rnn", "transformer"],
)
def test_time_major_inputs_report_the_batch_size_not_the_sequence_length(model):
    assert plan(model).make_batch(0).size == 8


@pytest.mark.parametrize(
    "norm, shape", [(nn.BatchNorm1d(7), (8, 7)), (nn.BatchNorm2d(3), (8, 3, 32, 32))], ids=["bn1d", "bn2d"]
)
def test_batchnorm_first_gives_a_batch_of_more_than_one(norm, shape):
    p = plan(nn.Sequential(norm, nn.ReLU()))
    (x,) = p.make_batch(0).args
    assert x.shape == shape and x.shape[0] > 1
    assert f"num_features={norm.num_features}" in p.description


def test_batchnorm_first_model_scans(tmp_path):
    report = scan(tmp_path, "from torch import nn\nmodel = nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 3))\n")
    assert report.result.batch_size == 8
    assert "BatchNorm1d" in context(report)["inputs"]


class OnlyAParameter(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x * self.scale


def test_uninferable_input_names_the_options():
    with pytest.raises(GradcheckError) as caught:
        plan(OnlyAParameter())
    message = str(caught.value)
    assert "cannot infer" in message
    for option in OPTION_NAMES:
        assert option in message


def test_uninferable_input_message_reads_as_a_sentence():
    with pytest.raises(GradcheckError, match="cannot infer") as caught:
        plan(OnlyAParameter())
    assert "has no layers does not say" not in str(caught.value)


def test_unknown_first_layer_that_changes_the_shape_fails_with_the_options(tmp_path):
    # The first layer with weights is a custom one: inference stops there and names it, rather than
    # describing the Linear after it as "the first layer".
    source = """
        import torch
        from torch import nn

        class Projection(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.randn(5, 3))

            def forward(self, x):
                return x @ self.w

        model = nn.Sequential(Projection(), nn.Linear(3, 2))
    """
    with pytest.raises(GradcheckError) as caught:
        scan(tmp_path, source)
    message = str(caught.value)
    assert "its first layer 0 (Projection)" in message
    for option in OPTION_NAMES:
        assert option in message


# ---------------------------------------------------------------------------------------------------------
# 2. Example inputs from the file, and input options

TWO_INPUTS = textwrap.dedent("""
    import torch
    from torch import nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)
            self.b = nn.Linear(5, 3)

        def forward(self, x, y):
            return self.a(x) + self.b(y)

    model = Model()
""")

MASKED = textwrap.dedent("""
    import torch
    from torch import nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 3)

        def forward(self, x, mask=None):
            assert mask is not None, "the mask keyword was not passed"
            return self.lin(x * mask)

    model = Model()
""")


@pytest.mark.parametrize(
    "source, expected",
    [
        (
            "import torch\nfrom torch import nn\nmodel = nn.Linear(6, 3)\n"
            "def example_inputs():\n    return torch.randn(4, 6)\n",
            "example_inputs() in the model file: (4, 6) float32",
        ),
        (
            TWO_INPUTS + "\ndef sample_input():\n    return torch.randn(4, 4), torch.randn(4, 5)\n",
            "sample_input() in the model file: (4, 4) float32, (4, 5) float32",
        ),
        (
            MASKED + '\ndef get_inputs():\n    return {"x": torch.randn(4, 6), "mask": torch.ones(4, 6)}\n',
            "get_inputs() in the model file: x=(4, 6) float32, mask=(4, 6) float32",
        ),
    ],
    ids=["tensor", "tuple", "dict_of_kwargs"],
)
def test_example_inputs_from_the_file_are_used(tmp_path, source, expected):
    report = scan(tmp_path, source)
    assert context(report)["inputs"] == expected
    assert report.result.batch_size == 4
    assert report.verdict is Verdict.HEALTHY


def test_example_inputs_take_precedence_over_options(tmp_path):
    source = "import torch\nfrom torch import nn\nmodel = nn.Linear(6, 3)\n"
    source += "def example_inputs():\n    return torch.randn(4, 6)\n"
    report = scan(tmp_path, source, inputs=InputOptions(shapes=((2, 99),)))
    assert context(report)["inputs"].startswith("example_inputs()")


@pytest.mark.parametrize(
    "value, kind", [("3", "int"), ("'tokens'", "str"), ("None", "NoneType")], ids=["int", "str", "none"]
)
def test_example_inputs_returning_something_else_is_a_clear_error(tmp_path, value, kind):
    source = f"from torch import nn\nmodel = nn.Linear(6, 3)\ndef sample_input():\n    return {value}\n"
    with pytest.raises(GradcheckError) as caught:
        scan(tmp_path, source)
    message = str(caught.value)
    assert message.startswith(f"sample_input() returned {kind!r}; ")
    assert "return a tensor, a tuple of inputs or a dict of keyword arguments" in message


def test_example_inputs_that_raise_are_named_in_the_error(tmp_path):
    source = "from torch import nn\nmodel = nn.Linear(6, 3)\ndef get_inputs():\n    raise ValueError('no data')\n"
    with pytest.raises(GradcheckError, match=r"get_inputs\(\) raised ValueError: no data"):
        scan(tmp_path, source)


def test_input_shape_is_repeatable_for_several_inputs(tmp_path):
    report = scan(tmp_path, TWO_INPUTS, inputs=InputOptions(shapes=((6, 4), (6, 5))))
    assert context(report)["inputs"] == "--input-shape: (6, 4) float32, (6, 5) float32"
    assert report.result.batch_size == 6


def test_input_shape_plan_makes_one_tensor_per_shape():
    p = plan(nn.Linear(4, 3), InputOptions(shapes=((6, 4), (6, 5))))
    x, y = p.make_batch(0).args
    assert (x.shape, y.shape) == ((6, 4), (6, 5))
    assert not p.assumed


def test_input_dtype_int64_with_vocab_size_draws_tokens(tmp_path):
    options = InputOptions(shapes=((4, 5),), dtype="int64", vocab_size=30)
    (tokens,) = plan(nn.Embedding(50, 4), options).make_batch(0).args
    assert tokens.dtype == torch.int64 and tokens.shape == (4, 5)
    assert tokens.max() < 30 and not tokens.requires_grad
    source = "from torch import nn\nmodel = nn.Sequential(nn.Embedding(50, 4), nn.Flatten(), nn.Linear(20, 3))\n"
    report = scan(tmp_path, source, inputs=options)
    assert context(report)["inputs"] == "--input-shape: (4, 5) int64 (tokens below 30)"


def test_integer_input_dtype_without_vocab_size_is_an_error():
    with pytest.raises(GradcheckError, match="--vocab-size"):
        plan(nn.Embedding(50, 4), InputOptions(shapes=((4, 5),), dtype="int64"))


def test_unknown_input_dtype_is_an_error():
    with pytest.raises(GradcheckError, match="--input-dtype 'int8' is not one of"):
        plan(nn.Linear(4, 3), InputOptions(shapes=((4, 4),), dtype="int8"))


def test_vocab_size_and_seq_len_for_token_models(tmp_path):
    options = InputOptions(vocab_size=20, seq_len=5)
    p = plan(nn.Embedding(50, 4), options)
    (tokens,) = p.make_batch(0).args
    assert tokens.shape == (8, 5) and tokens.dtype == torch.int64 and tokens.max() < 20
    assert p.description == "--vocab-size: (8, 5) int64 (tokens below 20)"
    source = "from torch import nn\nmodel = nn.Sequential(nn.Embedding(50, 4), nn.Flatten(), nn.Linear(20, 3))\n"
    assert scan(tmp_path, source, inputs=options).verdict is Verdict.HEALTHY


def test_seq_len_and_batch_size_shape_inferred_inputs():
    (tokens,) = plan(nn.Embedding(50, 4), InputOptions(seq_len=5, batch_size=2)).make_batch(0).args
    assert tokens.shape == (2, 5)


@pytest.mark.parametrize("text, shape", [("8,3,32,32", (8, 3, 32, 32)), ("8x3", (8, 3)), (" 4 , 5 ", (4, 5))])
def test_parse_shape_accepts_commas_and_x(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["", "a,b", "8,three", "0,3", "-1,3", "8.5,3"])
def test_bad_shape_text_is_an_error(text):
    with pytest.raises(GradcheckError, match="is not a shape; write positive integers"):
        parse_shape(text)


# ---------------------------------------------------------------------------------------------------------
# 3. Output selection and the loss


class ModelOutputStandIn(collections.OrderedDict):
    """Like transformers.ModelOutput: an OrderedDict subclass whose fields are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclasses.dataclass
class DataclassOutput:
    hidden: torch.Tensor
    logits: torch.Tensor


def test_select_output_tensor():
    x = torch.randn(8, 10)
    assert select_output(x) == (x, "the output tensor (8, 10)")


def test_select_output_tuple_takes_the_first_float_tensor():
    x = torch.randn(8, 10)
    tensor, where = select_output((torch.arange(3), None, x, torch.randn(2)))
    assert tensor is x and where == "output[2] (8, 10) (the first floating-point tensor)"


def test_select_output_dict_prefers_logits():
    logits = torch.randn(8, 10)
    tensor, where = select_output({"hidden": torch.randn(8, 4, 7), "logits": logits})
    assert tensor is logits and where == "output.logits (8, 10)"


def test_select_output_dataclass_prefers_logits():
    logits = torch.randn(8, 10)
    tensor, where = select_output(DataclassOutput(torch.randn(8, 4, 7), logits))
    assert tensor is logits and where == "output.logits (8, 10)"


@pytest.mark.parametrize("key", ["logits", "last_hidden_state"])
def test_select_output_model_output_stand_in(key):
    value = torch.randn(8, 4, 7)
    fields = {"loss": None, key: value, "hidden_states": (torch.randn(8, 4, 7),)}
    tensor, where = select_output(ModelOutputStandIn(fields))
    assert tensor is value and where == f"output.{key} (8, 4, 7)"


@pytest.mark.parametrize("key", ["logits", "last_hidden_state"])
def test_select_output_object_with_attributes(key):
    class Output:
        pass

    output, value = Output(), torch.randn(8, 10)
    setattr(output, key, value)
    tensor, where = select_output(output)
    assert tensor is value and where == f"output.{key} (8, 10)"


@pytest.mark.parametrize("output", [torch.arange(3), {"ids": torch.arange(3)}, (torch.arange(3),), "text"])
def test_select_output_without_a_float_tensor_is_an_error(output):
    with pytest.raises(GradcheckError, match="holds no floating-point tensor.*loss_fn"):
        select_output(output)


OUTPUT_MODEL = """
    import collections, dataclasses
    import torch
    from torch import nn

    class ModelOutput(collections.OrderedDict):
        pass

    @dataclasses.dataclass
    class Output:
        hidden: torch.Tensor
        logits: torch.Tensor

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(6, 6)
            self.head = nn.Linear(6, 4)

        def forward(self, x):
            h = torch.relu(self.body(x))
            logits = self.head(h)
            return {output}

    model = Model()
"""


@pytest.mark.parametrize(
    "output, row",
    [
        ("logits", "the output tensor (8, 4)"),
        ("(x.argmax(-1), logits, h)", "output[1] (8, 4) (the first floating-point tensor)"),
        ('{"hidden": h, "logits": logits}', "output.logits (8, 4)"),
        ("Output(h, logits)", "output.logits (8, 4)"),
        ("ModelOutput(loss=None, logits=logits)", "output.logits (8, 4)"),
        ("ModelOutput(last_hidden_state=logits)", "output.last_hidden_state (8, 4)"),
    ],
    ids=["tensor", "tuple", "dict", "dataclass", "model_output_logits", "model_output_hidden"],
)
def test_scan_context_says_which_output_was_used(tmp_path, output, row):
    report = scan(tmp_path, OUTPUT_MODEL.replace("{output}", output))
    assert context(report)["output"] == row
    assert report.verdict is Verdict.HEALTHY


def test_scan_context_rows_are_model_inputs_output_loss(tmp_path):
    report = scan(tmp_path, OUTPUT_MODEL.replace("{output}", "logits"))
    assert [what for what, _ in report.context] == ["model", "inputs", "output", "loss"]
    assert context(report)["model"] == f"the nn.Module instance `model` in {tmp_path / 'model.py'}"


def objective_loss(output, model=None, kind=None, namespace=None):
    objective = Objective(model or nn.Linear(2, 2), kind, namespace or {})
    loss = objective(output, Batch(args=()))
    return loss, objective


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((8, 10), "cross-entropy against random labels over 10 classes (chosen automatically)"),
        ((8, 1), "mean squared error against random N(0, 1) targets (chosen automatically)"),
        ((8,), "mean squared error against random N(0, 1) targets (chosen automatically)"),
        ((8, 3, 4, 4), "mean squared error against random N(0, 1) targets (chosen automatically)"),
    ],
    ids=["class_logits", "regression_b1", "vector", "image"],
)
def test_default_loss_from_the_output_shape(shape, expected):
    loss, objective = objective_loss(torch.randn(shape, requires_grad=True))
    assert objective.loss_description == expected
    assert loss.dim() == 0 and loss.requires_grad


def test_default_loss_is_token_cross_entropy_when_an_embedding_has_v_entries():
    model = nn.Sequential(nn.Embedding(7, 4), nn.Linear(4, 7))
    _, objective = objective_loss(torch.randn(8, 5, 7, requires_grad=True), model=model)
    assert objective.loss_description.startswith("cross-entropy against random labels over 7 classes")
    _, objective = objective_loss(torch.randn(8, 5, 6, requires_grad=True), model=model)
    assert objective.loss_description.startswith("mean squared error")


@pytest.mark.parametrize(
    "kind, expected",
    [
        (LossKind.CE, "cross-entropy against random labels over 4 classes (from --loss)"),
        (LossKind.MSE, "mean squared error against random N(0, 1) targets (from --loss)"),
        (LossKind.SUM, "the sum of the output (from --loss)"),
        (LossKind.MEAN, "the mean of the output (from --loss)"),
    ],
    ids=lambda v: v.value if isinstance(v, LossKind) else "",
)
def test_loss_override(tmp_path, kind, expected):
    report = scan(tmp_path, OUTPUT_MODEL.replace("{output}", "logits"), loss=kind)
    assert context(report)["loss"] == expected


def test_sum_loss_is_the_sum_of_the_output():
    output = torch.randn(8, 4, requires_grad=True)
    loss, _ = objective_loss(output, kind=LossKind.SUM)
    assert loss.item() == pytest.approx(output.sum().item())


def test_loss_override_ce_on_a_single_column_is_an_error():
    with pytest.raises(GradcheckError, match="--loss ce needs class logits.*--loss mse"):
        objective_loss(torch.randn(8, 1, requires_grad=True), kind=LossKind.CE)


def test_regression_model_scans_with_mse(tmp_path):
    source = "from torch import nn\nmodel = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 1))\n"
    report = scan(tmp_path, source)
    assert context(report)["output"] == "the output tensor (8, 1)"
    assert context(report)["loss"].startswith("mean squared error")


LOSS_FN_MODEL = """
    import torch
    from torch import nn

    model = nn.Linear(6, 3)

    def example_inputs():
        return torch.randn(4, 6)

    def {name}(output, inputs):
        # The loss gets the model's output whole and the example inputs; +100 marks it as this one.
        assert isinstance(inputs, torch.Tensor) and inputs.shape == (4, 6), inputs
        return (output - inputs[:, :3]).pow(2).mean() + 100.0
"""


@pytest.mark.parametrize("name", ["loss_fn", "compute_loss"])
def test_the_files_loss_function_is_used(tmp_path, name):
    report = scan(tmp_path, LOSS_FN_MODEL.replace("{name}", name))
    assert context(report)["loss"] == f"{name}(output, inputs) from the model file"
    assert context(report)["output"] == "passed whole to the file's loss function"
    assert all(loss >= 100.0 for loss in report.result.losses)


def test_loss_option_overrides_the_files_loss_function(tmp_path):
    report = scan(tmp_path, LOSS_FN_MODEL.replace("{name}", "loss_fn"), loss=LossKind.MEAN)
    assert context(report)["loss"] == "the mean of the output (from --loss)"
    assert all(abs(loss) < 100.0 for loss in report.result.losses)


def test_a_failing_loss_function_is_named(tmp_path):
    source = "import torch\nfrom torch import nn\nmodel = nn.Linear(6, 3)\n"
    source += "def loss_fn(output, inputs):\n    raise KeyError('labels')\n"
    with pytest.raises(GradcheckError, match=r"loss_fn\(\) in the model file raised KeyError"):
        scan(tmp_path, source)


# ---------------------------------------------------------------------------------------------------------
# 4. Recurrent models: the gradient reaching each time step

RECURRENT_CLASSIFIER = """
    import torch
    from torch import nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.{cls}(8, 32, batch_first=True)
            self.head = nn.Linear(32, 4)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[:, -1])  # the loss sees only the last step

    def build_model():
        return Classifier()

    def example_inputs():
        return torch.randn(8, {steps}, 8)
"""


def recurrent_source(cls="RNN", steps=40):
    return RECURRENT_CLASSIFIER.replace("{cls}", cls).replace("{steps}", str(steps))


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_recurrent_models_get_a_time_step_series_and_its_decay(tmp_path, cls):
    report = scan(tmp_path, recurrent_source(cls, steps=12))
    (series,) = report.result.recurrent
    assert (series.name, series.type) == ("rnn", cls)
    assert len(series.time_steps) == 12
    assert all(b > 0 and math.isfinite(b) for b in series.time_steps)
    (profile,) = report.diagnosis.time_profiles
    assert (profile.name, profile.type, profile.steps, profile.zero_steps) == ("rnn", cls, 12, 0)
    assert profile.decades == pytest.approx(math.log10(series.time_steps[0] / series.time_steps[-1]))
    # Loss on the last step: the gradient reaching earlier steps decays, step by step.
    assert profile.decades < 0 and profile.gain_per_step < 1


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_time_major_recurrent_models_are_measured_along_time(tmp_path, cls):
    source = f"""
        from torch import nn

        class Classifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = nn.{cls}(4, 8)
                self.head = nn.Linear(8, 3)

            def forward(self, x):
                out, _ = self.rnn(x)
                return self.head(out[-1])

        model = Classifier()
    """
    report = scan(tmp_path, source, inputs=InputOptions(seq_len=10))
    (series,) = report.result.recurrent
    assert len(series.time_steps) == 10  # time, not batch
    assert "time-major" in context(report)["inputs"]


def test_vanilla_rnn_vanishes_through_time_while_weight_gradients_look_fine(tmp_path):
    report = scan(tmp_path, recurrent_source("RNN", steps=40))
    assert report.verdict is Verdict.VANISHING
    (finding,) = errors(report)
    assert finding.kind is FindingKind.VANISHING_THROUGH_TIME and finding.layers == ["rnn"]
    assert finding.evidence["time_steps"] == 40
    (profile,) = report.diagnosis.time_profiles
    assert profile.decades < -5  # measured: -10.6, x0.53 per step
    assert profile.gain_per_step < 0.8
    # ...yet the weight gradients say nothing is wrong: no depth finding, and the recurrent layer's
    # weight gradient is within a decade of the head's, with an ordinary relative size.
    assert FindingKind.VANISHING_GRADIENT not in kinds(report)
    rnn, head = report.result.layer("rnn"), report.result.layer("head")
    assert 0.1 < rnn.weight_grad_norm / head.weight_grad_norm < 10
    assert 1e-4 < rnn.relative_grad < 1
    assert report.diagnosis.statuses["rnn"] is LayerStatus.VANISHING


def test_time_major_recurrent_scan_reports_the_batch_size(tmp_path):
    source = "from torch import nn\nmodel = nn.GRU(4, 8)\n"
    report = scan(tmp_path, source, inputs=InputOptions(seq_len=10), loss=LossKind.MEAN)
    assert report.result.batch_size == 8


# ---------------------------------------------------------------------------------------------------------
# 5. Real architectures

RESNET = """
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(x + self.bn2(self.conv2(out)))

    class ResNet(nn.Module):
        def __init__(self, channels=8, blocks=4, classes=10):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()
            )
            self.blocks = nn.Sequential(*[BasicBlock(channels) for _ in range(blocks)])
            self.head = nn.Linear(channels, classes)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))

    def build_model():
        return ResNet()

    def example_inputs():
        return torch.randn(8, 3, 8, 8)
"""


def test_small_resnet_is_healthy(tmp_path):
    report = scan(tmp_path, RESNET)
    assert report.verdict is Verdict.HEALTHY
    assert not report.diagnosis.findings
    profile = report.diagnosis.profile
    # along the network's path: every conv, stem included, compared like with like; 4 blocks read off the graph
    assert profile.layer_type == "Conv2d" and len(profile.layers) == 9 and profile.blocks == 4
    assert abs(profile.decades) < 1  # measured: +0.47, gain 1.15 per conv
    assert context(report)["loss"].startswith("cross-entropy")


TRANSFORMER_CLASSIFIER = """
    from torch import nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(100, 32)
            layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, norm_first={norm_first})
            self.encoder = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
            self.head = nn.Linear(32, 5)

        def forward(self, tokens):
            return self.head(self.encoder(self.embed(tokens)).mean(1))

    def build_model():
        return Classifier()
"""


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_transformer_encoder_classifier_is_healthy(tmp_path, norm_first):
    report = scan(tmp_path, TRANSFORMER_CLASSIFIER.replace("{norm_first}", str(norm_first)))
    assert not errors(report)
    assert report.verdict is Verdict.HEALTHY
    assert abs(report.diagnosis.profile.decades) < 1  # measured: -0.30 (post-LN), -0.19 (pre-LN)
    # The attention projections (q/k/v inside in_proj_weight) get small gradients at init: not flagged.
    for name, status in report.diagnosis.statuses.items():
        if name.endswith("self_attn"):
            assert status is LayerStatus.OK, name
    assert "num_embeddings=100" in context(report)["inputs"]


# A hand-written block with separate query/key/value projections, initialized like BERT and GPT-2
# (N(0, 0.02)): the attention logits start near zero, so the query/key output gradients are ~1e-3 of the
# others in every block. The backward signal through the residual stream is flat across the blocks.
ATTENTION_BLOCKS = """
    import math
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d=32, heads=4, norm_first={norm_first}):
            super().__init__()
            self.norm_first, self.heads = norm_first, heads
            self.query, self.key, self.value, self.out = (nn.Linear(d, d) for _ in range(4))
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.ff1, self.ff2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def attend(self, x):
            B, T, D = x.shape
            split = lambda t: t.view(B, T, self.heads, D // self.heads).transpose(1, 2)
            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // self.heads), dim=-1)
            return self.out((weights @ v).transpose(1, 2).reshape(B, T, D))

        def forward(self, x):
            if self.norm_first:
                x = x + self.attend(self.norm1(x))
                return x + self.ff2(torch.relu(self.ff1(self.norm2(x))))
            x = self.norm1(x + self.attend(x))
            return self.norm2(x + self.ff2(torch.relu(self.ff1(x))))

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(100, 32)
            self.blocks = nn.Sequential(*[Block() for _ in range(4)])
            self.head = nn.Linear(32, 5)

        def forward(self, tokens):
            return self.head(self.blocks(self.embed(tokens)).mean(1))

    def build_model():
        model = Classifier()
        for module in model.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        return model
"""


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_tiny_attention_query_key_gradients_are_not_flagged(tmp_path, norm_first):
    report = scan(tmp_path, ATTENTION_BLOCKS.replace("{norm_first}", str(norm_first)))
    statuses = report.diagnosis.statuses
    # The premise: q/k gradients are tiny compared with the rest of the block...
    block = report.result
    assert block.layer("blocks.0.query").backward < 1e-2 * block.layer("blocks.0.ff2").backward
    # ...and the residual stream is flat from the last block to the first.
    assert 0.5 < block.layer("blocks.0.ff2").backward / block.layer("blocks.3.ff2").backward < 2
    assert not errors(report)
    assert report.verdict is Verdict.HEALTHY
    for name, status in statuses.items():
        if name.endswith((".query", ".key")):
            assert not status.flagged, (name, status)


LSTM_LANGUAGE_MODEL = """
    from torch import nn

    class LanguageModel(nn.Module):
        def __init__(self, vocab=200, width=32):
            super().__init__()
            self.embed = nn.Embedding(vocab, width)
            self.lstm = nn.LSTM(width, width, num_layers=2, batch_first=True)
            self.decoder = nn.Linear(width, vocab)
            self.decoder.weight = self.embed.weight  # tied: one parameter, two modules

        def forward(self, tokens):
            hidden, _ = self.lstm(self.embed(tokens))
            return self.decoder(hidden)
"""


def test_lstm_language_model_with_tied_weights_is_healthy(tmp_path):
    report = scan(tmp_path, LSTM_LANGUAGE_MODEL)
    assert report.verdict is Verdict.HEALTHY
    assert not report.diagnosis.findings
    decoder = report.result.layer("decoder")
    assert decoder.shared_with == "embed"
    assert report.diagnosis.statuses["decoder"] is LayerStatus.OK
    assert report.diagnosis.statuses["embed"] is LayerStatus.OK
    assert report.result.layer("embed").grad_norm > 0
    # Per-token loss: every step is near the loss, so nothing decays through time.
    (profile,) = report.diagnosis.time_profiles
    assert profile.steps == 16 and abs(profile.decades) < 1
    assert context(report)["output"] == "the output tensor (8, 16, 200)"
    assert context(report)["loss"].startswith("cross-entropy against random labels over 200 classes")


def deep_stack(depth, width, make_layer):
    layers = []
    for _ in range(depth):
        layers += make_layer()
    return nn.Sequential(*layers, nn.Linear(width, 10))


def check_in_process(model, width):
    """The Python API without a file: check_model with a Batch maker and the scan's Objective."""
    objective = Objective(model, None, {})
    return check_model(model, lambda index: Batch(args=(torch.randn(8, width),)), objective, seed=0)


def test_deep_sigmoid_mlp_vanishes(torch_seed):
    model = deep_stack(20, 32, lambda: [nn.Linear(32, 32), nn.Sigmoid()])
    report = check_in_process(model, 32)
    assert report.verdict is Verdict.VANISHING
    profile = report.diagnosis.profile
    assert profile.decades < -5  # measured: about -15 over 20 layers
    assert profile.gain_per_layer == pytest.approx(0.14, abs=0.05)  # mean-field sqrt(chi) for sigmoid: 0.141
    assert errors(report)[0].kind is FindingKind.VANISHING_GRADIENT


def test_deep_linear_stack_with_gain_1_5_explodes(torch_seed):
    def layer():
        linear = nn.Linear(32, 32)
        nn.init.normal_(linear.weight, std=1.5 / math.sqrt(32))
        nn.init.zeros_(linear.bias)
        return [linear]

    model = deep_stack(20, 32, layer)
    report = check_in_process(model, 32)
    assert report.verdict is Verdict.EXPLODING
    profile = report.diagnosis.profile
    assert profile.decades >= 2  # measured: about +3.2
    assert profile.gain_per_layer == pytest.approx(1.5, abs=0.15)
    assert profile.forward_decades >= 2  # the activations grow too
    assert errors(report)[0].kind is FindingKind.EXPLODING_GRADIENT
    # The weight-gradient norms are blind to it (Glorot & Bengio 2010): first/last within a decade.
    first, last = report.result.layer("0"), report.result.layer("19")
    assert 0.1 < first.weight_grad_norm / last.weight_grad_norm < 10


def test_scan_is_reproducible_for_a_seed_within_one_process(tmp_path):
    # The seed is reset here on purpose; see the xfail below for what happens without it.
    first = scan(tmp_path, LSTM_LANGUAGE_MODEL, weights_seed=3)
    second = scan(tmp_path, LSTM_LANGUAGE_MODEL, weights_seed=3)
    assert first.result.losses == second.result.losses


def test_same_seed_gives_the_same_report(tmp_path):
    source = """
        from torch import nn
        layers = []
        for _ in range(8):
            layers += [nn.Linear(16, 16), nn.Tanh()]
        model = nn.Sequential(*layers, nn.Linear(16, 4))
    """
    target = write_model(tmp_path, source)
    torch.manual_seed(0)
    first = scan_target(target, ScanOptions(seed=0))
    second = scan_target(target, ScanOptions(seed=0))
    assert first.result.losses == second.result.losses
    assert first.diagnosis.profile.decades == second.diagnosis.profile.decades


# ---------------------------------------------------------------------------------------------------------
# Hugging Face models built from a config (no download); skipped when transformers is not installed.

GPT2 = """
    from transformers import GPT2Config, GPT2LMHeadModel

    def build_model():
        config = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=500, n_positions=64)
        return GPT2LMHeadModel(config)
"""

BERT = """
    from transformers import BertConfig, BertForSequenceClassification

    def build_model():
        config = BertConfig(
            vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            max_position_embeddings=64, num_labels=3,
        )
        return BertForSequenceClassification(config)
"""


@pytest.fixture
def transformers():
    return pytest.importorskip("transformers")


def test_gpt2_has_no_error_finding_and_its_tied_head_is_handled(tmp_path, transformers):
    report = scan(tmp_path, GPT2)
    assert not errors(report)
    assert report.verdict is Verdict.HEALTHY
    lm_head = report.result.layer("lm_head")
    assert lm_head.shared_with == "transformer.wte"  # lm_head.weight is wte.weight
    assert report.diagnosis.statuses["lm_head"] is LayerStatus.OK
    assert report.result.layer("transformer.wte").grad_norm > 0
    assert FindingKind.ZERO_GRADIENT not in kinds(report)
    assert context(report)["inputs"].startswith("read from the model's config (GPT2Config): input_ids")
    assert "below 500" in context(report)["inputs"]
    assert context(report)["output"] == "output.logits (8, 16, 500)"
    assert context(report)["loss"].startswith("cross-entropy against random labels over 500 classes")


def test_gpt2_has_no_vanishing_finding(tmp_path, transformers):
    report = scan(tmp_path, GPT2)
    assert FindingKind.VANISHING_GRADIENT not in kinds(report)
    assert not any(status.flagged for status in report.diagnosis.statuses.values())


def test_bert_has_no_error_finding(tmp_path, transformers):
    report = scan(tmp_path, BERT)
    assert context(report)["output"] == "output.logits (8, 3)"
    assert not errors(report)
    assert report.verdict is Verdict.HEALTHY
    for name, status in report.diagnosis.statuses.items():
        if name.endswith((".query", ".key")):
            assert not status.flagged, (name, status)


def test_bert_inputs_and_output_are_found(tmp_path, transformers):
    report = scan(tmp_path, BERT)
    assert context(report)["inputs"].startswith("read from the model's config (BertConfig): input_ids")
    assert context(report)["output"] == "output.logits (8, 3)"
    assert context(report)["loss"].startswith("cross-entropy against random labels over 3 classes")
    assert not report.result.loss_nonfinite


def test_select_output_reads_namedtuple_fields_by_name():
    Output = collections.namedtuple("Output", ["features", "logits"])
    features, logits = torch.randn(8, 32), torch.randn(8, 10)
    tensor, where = select_output(Output(features, logits))
    assert tensor is logits and where == "output.logits (8, 10)"


def test_cross_entropy_on_per_position_logits_uses_the_channel_dimension():
    model = nn.Conv2d(3, 5, 1)
    objective = Objective(model, LossKind.CE, {})
    output = model(torch.randn(2, 3, 4, 6))
    loss = objective(output, Batch(args=()))
    assert loss.ndim == 0 and "over 5 classes" in objective.loss_description


def test_position_embeddings_are_not_taken_for_a_vocabulary():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Embedding(100, 16)
            self.positions = nn.Embedding(16, 16)

        def forward(self, ids):
            return self.tokens(ids) + self.positions(torch.arange(ids.shape[1]))

    model = Encoder()
    objective = Objective(model, None, {})
    objective(model(torch.randint(0, 100, (2, 16))), Batch(args=()))
    assert objective.loss_description.startswith("mean squared error")  # hidden states, not 16-way logits
