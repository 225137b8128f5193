"""The zoo of real architectures (issue 22): the catalogue, the designs and the helpers of tests/test_zoo.py."""
