"""Deep models must not crash the process (issue 21, item 7).

A 40,000-layer Linear+ReLU model ended a scan in SIGSEGV. The cause: torch frees a deep autograd graph in a
loop, but a node that Python has read (``tensor.grad_fn``, a GradientEdge, ``register_hook``,
``next_functions``) is freed through its Python object, by recursion, and the probe read one per layer. Every
graph gradcheck reads is now let go from the root end once its roots are gone (``torch_compat.release_nodes``).

The fast tests watch the order nodes are freed in: a sentinel in each node's metadata records when the node
dies. Let go in order, each node dies on its own, latest first; a node freed by recursion from the one above it
dies before it, inside its destructor, so the order shows any recursion without needing a deep graph. The
slow tests (``-m slow``) scan, trace and monitor a 40,000-layer model in a subprocess, where a crash fails the
test instead of ending pytest. A model nested as deep as its own forward runs is deep-copied too (--steps,
--verify), where copy.deepcopy's recursion used to run out first.
"""

import random
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.common.errors import GradcheckError
from gradcheck_cli.examine.copies import copy_model
from gradcheck_cli.measure import nonfinite, outputs, torch_compat
from gradcheck_cli.measure.graph import has_skip_connections
from gradcheck_cli.measure.nonfinite import trace_nonfinite
from gradcheck_cli.measure.probe import probe_model
from gradcheck_cli.measure.torch_compat import release_nodes, torch_version
from gradcheck_cli.monitor.monitor import Monitor

ACCUMULATE_GRAD = "torch::autograd::AccumulateGrad"  # a leaf: nothing below it to free


class Sentinel:
    """Lives in a node's metadata, so it dies with the node: records the node's sequence number then."""

    def __init__(self, sequence_nr: int, deaths: list[int]):
        self.sequence_nr, self.deaths = sequence_nr, deaths

    def __del__(self):
        self.deaths.append(self.sequence_nr)


def tag(nodes, deaths) -> int:
    """A sentinel in each distinct node that has nodes below it; the number tagged."""
    distinct = {id(node): node for node in nodes if node.name() != ACCUMULATE_GRAD}
    for node in distinct.values():
        node.metadata["sentinel"] = Sentinel(node._sequence_nr(), deaths)
    return len(distinct)


@pytest.fixture
def releases(monkeypatch):
    """torch_compat.release_nodes, watched wherever it is called: per call, (nodes tagged, sequence numbers in the order the nodes died
    during the call)."""
    calls = []

    def watched(nodes):
        deaths: list[int] = []
        tagged = tag(nodes, deaths)
        release_nodes(nodes)
        calls.append((tagged, deaths))

    monkeypatch.setattr(outputs, "release_nodes", watched)
    monkeypatch.setattr(torch_compat, "release_nodes", watched)  # (nonfinite.py and the monitor's releaser)
    monkeypatch.setattr(nonfinite, "release_nodes", watched)
    return calls


def assert_let_go_from_the_root_end(calls):
    assert calls and any(tagged for tagged, _ in calls)
    for tagged, deaths in calls:
        assert len(deaths) == tagged  # all died in the call: nothing else held the graph any more
        assert deaths == sorted(deaths, reverse=True)  # each on its own, latest first: no recursion


def chain(depth: int, read: list | None = None) -> torch.Tensor:
    x = torch.randn(2, 3, requires_grad=True)
    y = x
    for _ in range(depth):
        y = torch.tanh(y * 1.0)
        if read is not None:
            read.append(y.grad_fn)
    return y.sum()


def test_release_nodes_lets_go_of_a_deep_chain_one_node_at_a_time():
    read: list = []
    loss = chain(3 * sys.getrecursionlimit(), read)
    loss.backward()
    deaths: list[int] = []
    tagged = tag(read, deaths)
    random.Random(0).shuffle(read)  # whatever order the nodes were read in
    del loss
    assert deaths == []  # held by the list
    release_nodes(read)
    assert read == [] and len(deaths) == tagged and deaths == sorted(deaths, reverse=True)


@pytest.mark.skipif(
    torch_version() < (2, 13),
    reason=f"torch 2.13 frees read nodes by recursion, 2.2 to 2.4 one at a time; this is torch {torch.__version__}",
)
def test_dropping_the_root_first_is_what_frees_a_read_chain_by_recursion():
    # The control: the nodes let go while the root still holds the graph, it frees them all from its destructor,
    # nested, the innermost first (what overflowed the stack at 40,000 layers). Should this fail, torch no
    # longer frees read nodes by recursion, and release_nodes is a precaution only.
    read: list = []
    loss = chain(50, read)
    deaths: list[int] = []
    tag(read, deaths)
    read.clear()
    assert deaths == []
    del loss
    assert len(deaths) == 50 and deaths == sorted(deaths)


def test_has_skip_connections_walks_a_graph_deeper_than_the_recursion_limit():
    depth = sys.getrecursionlimit() + 100
    stem, layers = nn.Linear(3, 3), nn.Sequential(*[nn.Linear(3, 3) for _ in range(depth)])
    h = stem(torch.randn(2, 3))
    nodes: list = []
    assert has_skip_connections((h + layers(h)).sum(), nodes) is True
    assert len(nodes) > depth  # every node read, for release_nodes
    assert has_skip_connections(layers(h).sum(), nodes) is False
    del h
    release_nodes(nodes)


def nested(levels: int) -> nn.Module:
    model = nn.Linear(4, 4)
    for _ in range(levels):
        model = nn.Sequential(model, nn.Tanh())
    return model


def test_a_model_nested_as_deep_as_its_forward_runs_is_copied_for_steps_and_verify():
    model = nested(sys.getrecursionlimit() // 5)  # its forward takes three frames a level: it runs
    model(torch.randn(2, 4)).sum().backward()
    copied = copy_model(model, "--steps")
    assert copied is not model and torch.equal(copied(torch.ones(2, 4)), model(torch.ones(2, 4)))


class Residual(nn.Module):
    def __init__(self, width: int, depth: int):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(depth))
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def mean_loss(output, batch):
    return output.pow(2).mean()


@pytest.mark.parametrize("large", [False, True], ids=["batched-outputs", "hooked-outputs"])
def test_the_probe_lets_go_of_the_nodes_it_read_once_each_pass_graph_is_gone(releases, large):
    torch.manual_seed(0)
    width = 256 if large else 8  # outputs of LARGE_NUMEL elements take a tensor hook as well as an edge
    model = Residual(width, 6)
    x = torch.randn(outputs.LARGE_NUMEL // width if large else 4, width)
    result = probe_model(model, lambda index: Batch(args=(x,)), mean_loss, passes=3)  # structure=None: skip walk
    assert result.structure.residual is True
    assert len(releases) >= 3  # one per pass
    assert_let_go_from_the_root_end(releases)


class FailsHalfWay(nn.Module):
    def __init__(self, fails: bool):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(8))
        self.fails = fails

    def forward(self, x):
        for index, layer in enumerate(self.layers):
            x = torch.tanh(layer(x))
            if index == 5 and self.fails:
                raise ValueError("broken")
        return x


def failing_loss(output, batch):
    try:
        raise ValueError("broken")
    except ValueError as error:  # as gradcheck's Objective reports a model file's loss_fn that raised
        raise GradcheckError(f"loss_fn() raised: {error}") from error


@pytest.mark.parametrize("where", ["forward", "loss"])
def test_the_probe_lets_go_of_the_graph_of_a_pass_that_failed(releases, where):
    model = FailsHalfWay(fails=where == "forward")
    with pytest.raises(GradcheckError, match="broken"):
        probe_model(model, lambda index: Batch(args=(torch.randn(2, 4),)), failing_loss, passes=1)
    # the exceptions' frames held the graph: cleared before the nodes were let go
    assert_let_go_from_the_root_end(releases)


def test_the_nonfinite_trace_lets_go_of_the_nodes_its_hooks_read(releases):
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh())
    x = torch.randn(3, 4)
    origin = trace_nonfinite(model, Batch(args=(x,)), lambda output, batch: (output * float("inf")).sum())
    assert origin is not None and len(releases) == 1
    assert_let_go_from_the_root_end(releases)


def test_the_monitor_lets_go_of_the_nodes_it_read_when_the_user_drops_the_graph(releases):
    torch.manual_seed(0)
    model = Residual(8, 4)
    with Monitor(model, every=2, on_problem="record") as monitor:
        for _ in range(3):  # steps 1 and 3 sampled: hooks on every layer output, and the skip walk on step 1
            loss = model(torch.randn(4, 8)).pow(2).mean()
            loss.backward()
            monitor.step(loss)
            model.zero_grad()  # (no optimizer: torch.optim's first use imports torch._dynamo, seconds)
    assert monitor.header.structure.residual is True
    watched = len(releases)  # step 1's graph went when step 2's loss replaced it
    assert watched >= 1
    del loss  # the last, sampled step's graph outlived the monitor: its nodes go with it, in order
    assert len(releases) > watched
    assert_let_go_from_the_root_end(releases)


# ------------------------------------------------------------------------------------------------ slow

DEEP = 40_000


def run_python(source: str, timeout: float) -> subprocess.CompletedProcess:
    """Run in a subprocess: a segfault there fails the test instead of killing pytest."""
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def deep_model_file(tmp_path) -> str:
    path = tmp_path / "deep.py"
    path.write_text(
        textwrap.dedent(
            f"""
            import torch
            from torch import nn

            def build_model():
                layers = []
                for _ in range({DEEP}):
                    layers += [nn.Linear(4, 4), nn.ReLU()]
                return nn.Sequential(*layers)

            def example_inputs():
                return torch.randn(8, 4)
            """
        )
    )
    return str(path)


@pytest.mark.slow
def test_a_40000_layer_model_is_scanned_to_a_verdict(tmp_path):
    done = run_python(
        f"""
        from gradcheck_cli.scan.checks import check
        report = check({deep_model_file(tmp_path)!r})
        print(report.diagnosis.verdict.value, len(report.result.layers))
        """,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    verdict, layers = done.stdout.split()
    assert verdict == "vanishing" and int(layers) == DEEP


@pytest.mark.slow
def test_a_40000_layer_model_gone_nonfinite_is_traced_to_its_origin():
    done = run_python(
        f"""
        import torch
        from torch import nn
        from gradcheck_cli.measure.nonfinite import trace_nonfinite
        from gradcheck_cli.common.batches import Batch

        layers = []
        for _ in range({DEEP}):
            layers += [nn.Linear(4, 4), nn.ReLU()]
        model = nn.Sequential(*layers)
        origin = trace_nonfinite(model, Batch(args=(torch.randn(8, 4),)), lambda out, batch: out.mean() * float("inf"))
        print(origin.stage)
        """,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["loss"]


@pytest.mark.slow
def test_a_40000_layer_model_trains_under_the_monitor():
    done = run_python(
        f"""
        import torch
        from torch import nn
        from gradcheck_cli.monitor.monitor import Monitor

        layers = []
        for _ in range({DEEP}):
            layers += [nn.Linear(4, 4), nn.ReLU()]
        model = nn.Sequential(*layers)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        with Monitor(model, every=2, on_problem="record") as monitor:
            for _ in range(3):  # the last step sampled: its graph outlives the monitor
                loss = model(torch.randn(8, 4)).pow(2).mean()
                loss.backward()
                monitor.step(loss)
                optimizer.step()
                optimizer.zero_grad()
        del loss
        print(len(monitor.history))
        """,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["2"]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from /proc")
def test_float64_norms_of_many_large_gradients_take_no_memory_of_their_own():
    # A vanishing model's parameter gradients are normed again in float64, each from a float64 copy. Taken with
    # torch._foreach_norm, the 0-d results kept between the copies fragmented the heap: a 2,000-layer MLP of width
    # 256 grew by 1 GB. In a fresh process, where the allocator starts as a scan's does.
    done = run_python(
        """
        import torch
        from gradcheck_cli.measure.layer_figures import exact_norms

        def rss(field):
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))

        grads = []
        for _ in range(1000):
            grads += [torch.zeros(256, 256), torch.zeros(256)]  # underflowed: every norm taken again
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        start = rss("VmRSS")
        exact_norms(grads, [0.0] * len(grads))
        print((rss("VmHWM") - start) // 1024)
        """,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout) < 64  # MB; 1,000 float64 copies of 512 KB each would be 500


def test_a_saturation_cause_whose_derivative_underflowed_to_zero_is_named_not_a_math_error():
    # Every sigmoid's derivative underflowed: the compounded term is 0, whose log10 raised "math domain error"
    # (a --verify trial on a 5,000-layer sigmoid MLP); the decades measured stand in for it.
    from gradcheck_cli.common.stats import ActivationStats
    from gradcheck_cli.judge.causes import _saturation

    sites = [ActivationStats(f"act{i}", "Sigmoid", f"fc{i}", 4, 1.0, None, 0.0) for i in range(3)]
    cause = _saturation(sites, 0.0, 3, 42.0)
    assert cause.decades == 42.0
    assert "10^-42" in cause.summary


def test_norms_inserted_into_a_deep_sequential_get_fresh_names():
    # The names are now drawn from one set kept up to date (it was rebuilt per norm: O(n^2), over 15 minutes
    # for --verify at 40,000 layers); a name the model already has is still never reused.
    from collections import OrderedDict

    from gradcheck_cli.trials.transforms import apply_fix_to_copy

    layers = OrderedDict((str(i), nn.Linear(2, 2)) for i in range(300))
    layers["0_norm"] = nn.Identity()  # taken already: the norm after layer 0 must not take it
    layers["head"] = nn.Linear(2, 2)
    fixed, _ = apply_fix_to_copy(nn.Sequential(layers), "batchnorm", {"norm": "batch"})
    names = [name for name, _ in fixed.named_children()]
    assert len(names) == len(set(names))
    assert sum(isinstance(m, nn.BatchNorm1d) for m in fixed.children()) == 300
    assert "0_norm2" in names and isinstance(dict(fixed.named_children())["0_norm"], nn.Identity)
