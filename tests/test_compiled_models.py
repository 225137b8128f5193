"""A torch.compile'd model is measured through its original module, eagerly (issue 23).

Regression: a model file with ``model = torch.compile(net)`` scanned with exit 1, its layers named
``_orig_mod.0``...; with ``backend="eager"`` dynamo traced into the probe's hooks (18 graphs). Now the
layer names and every figure are the uncompiled model's, no graph is compiled during a scan, the report
says so in its context, and the model is left as found (still compiled, no hooks, its train/eval mode).

The models are compiled with ``backend="eager"`` (compiling, were it to happen, takes milliseconds on a CPU);
one test takes the default inductor backend, which a scan does not compile either.
"""

import dataclasses
import io
import json

import pytest
import torch
from torch import nn
from torch._dynamo.eval_frame import OptimizedModule
from torch._dynamo.utils import counters
from typer.testing import CliRunner

from gradcheck_cli import Batch, Monitor, check, check_model
from gradcheck_cli.cli.main import app
from gradcheck_cli.measure.torch_compat import FORCE_EAGER
from gradcheck_cli.render.interface import RenderOptions
from gradcheck_cli.render.text import TextRenderer

NOTE = "measured through its original module: compiled code is not run, so the figures are eager-mode figures"


class Net(nn.Module):
    """A block (compiled in the nested case) and a head, so a layer name shows where a wrapper was."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh())
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x))


def build_net() -> Net:
    torch.manual_seed(0)
    return Net()


def inputs() -> torch.Tensor:
    return torch.randn(8, 8)


@pytest.fixture
def graphs():
    """dynamo's counters from zero; read ``graphs()`` for the graphs compiled since (and frames it tried)."""
    counters.clear()
    return lambda: counters["stats"]["unique_graphs"] + counters["frames"]["total"]


def figures(report) -> list[dict]:
    """Every per-layer figure of a report (the names included), for an exact comparison."""
    return [dataclasses.asdict(layer) for layer in report.result.layers]


def hooks_of(model: nn.Module) -> list:
    """Every hook, and every forward set on an instance, on the model and everything it holds."""
    found = []
    for module in model.modules():
        found += [*module._forward_hooks, *module._forward_pre_hooks, *module._backward_hooks]
        if "forward" in vars(module) and not isinstance(module, OptimizedModule):  # (a wrapper's own forward)
            found.append(module)
    return found


def state(model: nn.Module) -> dict:
    return {
        "modes": [m.training for m in model.modules()],
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [p.grad for p in model.parameters()],
        "hooks": hooks_of(model),
    }


def assert_as_found(model: nn.Module, before: dict) -> None:
    after = state(model)
    assert after["modes"] == before["modes"]
    assert after["grads"] == before["grads"] == [None] * len(after["grads"])
    assert after["hooks"] == before["hooks"] == []
    assert after["weights"].keys() == before["weights"].keys()
    assert all(torch.equal(after["weights"][k], before["weights"][k]) for k in before["weights"])


def test_python_api_measures_the_original_module_of_a_compiled_model(graphs):
    net = build_net()
    expected = figures(check(net, inputs, passes=2))
    model = torch.compile(net, backend="eager")
    model.eval()
    before, wrapper_training = state(model), model.training
    counters.clear()

    report = check(model, inputs, passes=2)

    assert graphs() == 0
    assert [layer.name for layer in report.result.layers] == ["block.0", "block.2", "head"]
    assert figures(report) == expected  # the same weights and batches, run eagerly: the very same figures
    assert report.title == "Net"
    context = dict(report.context)
    assert context["model"] == "the Net given"
    assert context["compiled"] == f"torch.compile(model), {NOTE}"
    assert isinstance(model, OptimizedModule) and model._orig_mod is net
    assert_as_found(model, before)
    # eval mode as given, though the probe trains; the wrapper's flag as found too (torch 2.4's model.eval() left
    # it True, pytorch/pytorch#132986)
    assert not net.training and model.training is wrapper_training
    model(inputs())  # still the compiled model: calling it compiles it
    assert graphs() > 0


def test_check_model_measures_the_original_module_and_says_so(graphs):
    net = build_net()
    loss = lambda output, batch: output.pow(2).mean()  # noqa: E731
    expected = figures(check_model(net, lambda i: Batch((inputs(),)), loss, passes=2))
    counters.clear()

    report = check_model(torch.compile(net, backend="eager"), lambda i: Batch((inputs(),)), loss, passes=2)

    assert graphs() == 0
    assert figures(report) == expected
    assert report.context == [("compiled", f"torch.compile(model), {NOTE}")]


def test_nested_compiled_submodule_is_measured_through_its_original(graphs):
    expected = figures(check(build_net(), inputs, passes=2))
    model = build_net()
    block = model.block = torch.compile(model.block, backend="eager")
    before = state(model)
    counters.clear()

    report = check(model, inputs, passes=2)

    assert graphs() == 0
    assert [layer.name for layer in report.result.layers] == ["block.0", "block.2", "head"]
    assert figures(report) == expected
    assert dict(report.context)["compiled"] == f"torch.compile(block), {NOTE}"
    assert model.block is block and model._modules["block"] is block  # the wrapper is back in its place
    assert_as_found(model, before)


def test_compiled_model_with_compiled_submodule_and_copies(graphs):
    """Both wrapped; --steps and --verify measure copies of the model, eagerly too."""
    model = build_net()
    model.block = torch.compile(model.block, backend="eager")
    model = torch.compile(model, backend="eager")
    counters.clear()

    report = check(model, inputs, passes=1, steps=2, verify=True)

    assert graphs() == 0
    assert [layer.name for layer in report.result.layers] == ["block.0", "block.2", "head"]
    assert dict(report.context)["compiled"].startswith("torch.compile(model), torch.compile(block), measured")
    assert [layer.name for layer in report.training[-1].report.result.layers] == ["block.0", "block.2", "head"]


@pytest.mark.skipif(not FORCE_EAGER.available(), reason=f"model.compile(): {FORCE_EAGER.missing()}")
def test_module_compiled_in_place_runs_eagerly(graphs):
    net = build_net()
    expected = figures(check(net, inputs, passes=2))
    net.compile(backend="eager")
    counters.clear()

    report = check(net, inputs, passes=2)

    assert graphs() == 0
    assert figures(report) == expected
    assert dict(report.context)["compiled"].startswith("model.compile(), measured")


def test_module_compiled_in_place_on_a_torch_without_set_stance_says_it_ran_compiled(monkeypatch):
    """torch < 2.6 has no force_eager stance: model.compile() then runs compiled, and the report says so
    rather than calling the figures eager-mode figures."""
    net = build_net()
    net.compile(backend="eager")
    monkeypatch.delattr(torch.compiler, "set_stance", raising=False)

    note = dict(check(net, inputs, passes=2).context)["compiled"]

    assert note.startswith("model.compile() ran compiled: running it eagerly needs torch >= 2.6")
    assert "eager-mode figures" not in note
    assert torch.__version__ in note


def test_default_inductor_backend_compiles_nothing_either(graphs):
    net = build_net()
    expected = figures(check(net, inputs, passes=1))
    counters.clear()

    report = check(torch.compile(net), inputs, passes=1)

    assert graphs() == 0
    assert figures(report) == expected


# --- the command line ---------------------------------------------------------------------------------

MODEL_FILE = """\
import torch
from torch import nn

net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))
{assignment}

def example_inputs():
    return torch.randn(8, 8)
"""


def scan(tmp_path, assignment: str, *args: str):
    (tmp_path / "model.py").write_text(MODEL_FILE.format(assignment=assignment))
    result = CliRunner().invoke(
        app, ["scan", str(tmp_path / "model.py"), "--passes", "2", *args], env={"COLUMNS": "100", "NO_COLOR": "1"}
    )
    return result


def test_cli_scan_of_a_compiled_model_file(tmp_path, graphs):
    """The file defines both the module and its compiled wrapper: one model, not two candidates."""
    baseline = str(tmp_path / "baseline.json")
    plain = scan(tmp_path, "model = net", "--format", "json", "--save-baseline", baseline)
    assert plain.exit_code == 0, plain.stderr
    counters.clear()

    compiled = scan(tmp_path, 'model = torch.compile(net, backend="eager")', "--format", "json", "--baseline", baseline)

    assert compiled.exit_code == 0, compiled.stderr
    assert graphs() == 0
    expected, document = json.loads(plain.stdout), json.loads(compiled.stdout)
    assert "_orig_mod" not in compiled.stdout
    assert document["title"].endswith("model.py (Sequential)")
    assert document["context"]["compiled"] == f"torch.compile(model), {NOTE}"
    assert "compiled" not in expected["context"]
    assert [layer["name"] for layer in document["layers"]] == ["0", "2", "4"]
    assert document["layers"] == expected["layers"]  # the file builds the same weights with the scan's seed
    assert document["baseline"]["changes"] == []  # the uncompiled model's baseline fits, layer by layer


def test_cli_text_report_carries_the_note(tmp_path):
    result = scan(tmp_path, 'model = torch.compile(net, backend="eager")')

    assert result.exit_code == 0, result.stderr
    assert "_orig_mod" not in result.stdout
    assert "compiled: torch.compile(model), measured through its original module" in " ".join(result.stdout.split())


def test_text_renderer_shows_the_note():
    report = check(torch.compile(build_net(), backend="eager"), inputs, passes=1)
    buffer = io.StringIO()
    TextRenderer().render(report, buffer, RenderOptions(width=200, color=False))
    assert f"compiled: torch.compile(model), {NOTE}" in buffer.getvalue()


@pytest.mark.parametrize(
    "assignment, target",
    [
        ("build_model = torch.compile(lambda: net)", "model.py"),
        ("def forward(x):\n    return net(x)\n\nrun = torch.compile(forward)", "model.py:run"),
    ],
)
def test_cli_compiled_function_is_refused_with_a_sentence(tmp_path, assignment, target):
    (tmp_path / "model.py").write_text(MODEL_FILE.format(assignment=assignment))
    result = CliRunner().invoke(app, ["scan", str(tmp_path / target)], env={"COLUMNS": "200", "NO_COLOR": "1"})

    assert result.exit_code == 2
    assert "is a function compiled with torch.compile, which gradcheck does not run" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


# --- the training monitor -----------------------------------------------------------------------------


@pytest.mark.parametrize("nested", [False, True])
def test_monitor_names_the_layers_of_the_original_module(nested):
    """The training steps run the compiled code (the monitor reads their gradients); the layers are named
    as in the uncompiled model, and the model stays compiled."""
    model = build_net()
    if nested:
        model.block = torch.compile(model.block, backend="eager")
    else:
        model = torch.compile(model, backend="eager")
    wrappers = [m for m in model.modules() if isinstance(m, OptimizedModule)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    with Monitor(model, every=2, on_problem="record") as monitor:
        for _ in range(3):
            loss = model(inputs()).pow(2).mean()
            loss.backward()
            monitor.step(loss)
            optimizer.step()
            optimizer.zero_grad()

    names = ["block.0", "block.2", "head"]
    assert [layer.name for layer in monitor.header.layers] == names
    assert [layer.name for layer in monitor.history[-1].layers] == names
    assert monitor.header.model == "Net"
    assert [m for m in model.modules() if isinstance(m, OptimizedModule)] == wrappers  # still compiled
    assert hooks_of(model) == []
