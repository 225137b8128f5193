"""time_profiles.py on its own: the per-step probe of a recurrent module and the median over passes."""

import pytest
import torch
from torch import nn

from gradcheck_cli.measure.recurrent import StackedLayers
from gradcheck_cli.measure.time_profiles import TimeProfiles, median_series


def test_the_probe_gradient_is_the_input_gradient_at_every_step():
    torch.manual_seed(0)
    rnn = nn.RNN(3, 4, batch_first=True)
    profiles = TimeProfiles(StackedLayers([]))
    profiles.start_pass()
    handle = rnn.register_forward_pre_hook(profiles.pre_hook("rnn", rnn))
    x = torch.randn(2, 5, 3, requires_grad=True)
    rnn(x)[0].sum().backward()
    handle.remove()
    ((name, probe, time_dim),) = profiles.probes
    assert name == "rnn" and time_dim == 1 and torch.equal(probe.grad, x.grad)
    host = [99.0, *profiles.step_sums()[0].tolist()]
    steps, offset = profiles.unpack(host, 1)
    assert offset == 6 and steps["rnn"] == pytest.approx(x.grad.pow(2).sum(dim=(0, 2)).tolist())
    assert profiles.recurrent_types == {"rnn": "RNN"}


def test_the_series_is_the_median_per_step_of_the_per_sample_rms():
    series = median_series([{"a": [1.0, 4.0]}, {"a": [9.0, 16.0, 1.0]}, {"a": [4.0, 1.0]}], [1, 1, 1])
    assert series == {"a": [2.0, 2.0]}  # medians of (1, 3, 2) and (2, 4, 1); as long as the shortest run
