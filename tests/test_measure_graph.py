"""graph.py on its own: skips read off the autograd graph, and the structure read off the module types."""

import torch
from torch import nn

from gradcheck_cli.measure.graph import describe_structure, has_skip_connections, read_skips


def test_a_residual_sum_and_a_dense_concatenation_are_skips():
    x = torch.randn(2, 4)
    a, b = nn.Linear(4, 4), nn.Linear(8, 4)
    h = a(x)
    assert read_skips((h + a(h)).sum(), []).additions == 1
    assert read_skips(b(torch.cat([h, a(h)], dim=1)).sum(), []).concatenations == 1
    nodes = []
    assert not has_skip_connections(a(a(x)).sum(), nodes) and nodes  # (every node read is handed back)


def test_an_input_added_to_a_layers_output_is_not_a_skip():
    x = torch.randn(2, 4)
    assert read_skips((x + nn.Linear(4, 4)(x)).sum(), []).merges == 0


def test_the_structure_counts_activations_norms_and_recurrent_modules():
    model = nn.Sequential(nn.Conv1d(2, 2, 1), nn.ReLU(), nn.LayerNorm(2), nn.ReLU(), nn.RNN(2, 2, nonlinearity="relu"))
    structure = describe_structure(model, residual=False)
    assert structure.activations == {"ReLU": 2} and structure.norms == {"LayerNorm": 1}
    assert structure.recurrent == {"RNN(relu)": 1} and structure.convolutional and structure.residual is False
