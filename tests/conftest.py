import os
import warnings

import pytest

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")


def pytest_configure(config):
    # The tests use small models, for which one intra-op thread is as fast as two; on a busy 2-core CI
    # machine a second thread spin-waits for a core and a tiny backward pass took 300 ms instead of 0.5.
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # the scan's worker processes, likewise
    # CLI tests run the scan's jobs in the test process (isolation.INLINE_VARIABLE); the tests of the process
    # boundary itself take the real worker with the `real_worker` fixture.
    os.environ["GRADCHECK_INLINE_WORKER"] = "1"


def pytest_terminal_summary(terminalreporter):
    # Which torch the suite ran on, at any verbosity (the header, pytest_report_header, is hidden by -q): CI
    # runs it on the pinned torch and on the floor, `make test-floor` (issue 23).
    import torch

    terminalreporter.write_line(f"ran on torch {torch.__version__}")


@pytest.fixture
def torch_seed():
    import torch

    torch.manual_seed(0)
    return 0


@pytest.fixture
def real_worker(monkeypatch):
    """The scan's jobs in a real worker process, as for a user."""
    monkeypatch.delenv("GRADCHECK_INLINE_WORKER", raising=False)
