import warnings

import pytest

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")


@pytest.fixture
def torch_seed():
    import torch

    torch.manual_seed(0)
    return 0
