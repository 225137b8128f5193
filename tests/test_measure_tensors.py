"""tensors.py on its own: tensors found in nested values, a batch's size, and what a layer's inputs carry."""

import torch

from gradcheck_cli.common.batches import Batch
from gradcheck_cli.measure.tensors import batch_on_device, batch_size, carries_grad, starts_path, tensors_in


def test_tensors_are_found_inside_tuples_lists_and_dicts_in_order():
    a, b, c = torch.zeros(1), torch.ones(1), torch.ones(2)
    assert list(tensors_in((a, [1, {"x": b}], "text", {"y": (c,)}))) == [a, b, c]


def test_batch_size_is_the_given_size_or_the_first_dimension_of_the_first_tensor():
    assert batch_size(Batch(args=(torch.zeros(()), torch.zeros(5, 2)))) == 5
    assert batch_size(Batch(args=(torch.zeros(5, 2),), size=3)) == 3
    assert batch_size(Batch(args=("no tensor",))) == 1


def test_a_batch_already_on_the_models_device_is_given_back_as_it_is():
    batch = Batch(args=(torch.zeros(2),))
    assert batch_on_device(batch, [torch.nn.Parameter(torch.zeros(1))]) is batch


def test_inputs_with_and_without_a_gradient_history():
    leaf = torch.zeros(2, requires_grad=True)
    assert carries_grad((leaf,)) and not starts_path((leaf,))
    assert not carries_grad((torch.zeros(2),)) and starts_path((torch.zeros(2),))
    assert not starts_path(("no tensor",))
