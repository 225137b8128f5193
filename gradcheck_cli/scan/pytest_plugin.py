"""pytest plugin (entry point ``pytest11``): a ``gradcheck`` fixture for gradient-health tests.

    def test_model_trains(gradcheck):
        gradcheck.assert_healthy(build_model(), torch.randn(8, 3, 32, 32))

Nothing heavy is imported until the fixture is used, so installing gradcheck does not slow other
test runs.
"""

from __future__ import annotations

from typing import Any

import pytest


class GradcheckFixture:
    """``check`` and ``assert_healthy`` with the defaults of one test; see ``gradcheck_cli.scan.checks``."""

    def check(self, model: Any, inputs: Any = None, **kwargs: Any) -> Any:
        from gradcheck_cli.scan.checks import check

        return check(model, inputs, **kwargs)

    def assert_healthy(self, model: Any, inputs: Any = None, **kwargs: Any) -> Any:
        from gradcheck_cli.scan.checks import assert_gradients_healthy

        __tracebackhide__ = True  # the failure points at the test, not at gradcheck
        return assert_gradients_healthy(model, inputs, **kwargs)


@pytest.fixture
def gradcheck() -> GradcheckFixture:
    return GradcheckFixture()
