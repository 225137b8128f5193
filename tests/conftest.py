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


@pytest.fixture
def torch_seed():
    import torch

    torch.manual_seed(0)
    return 0
