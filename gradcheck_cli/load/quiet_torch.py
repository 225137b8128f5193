"""Silencing torch while it reads a user's saved model, so the user gets gradcheck's one sentence."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_torch() -> Iterator[None]:
    """torch logs tracebacks (a truncated .pt2: 13 lines) and warns (FutureWarning, deprecations) while it
    reads a saved model; the user gets gradcheck's one sentence instead. Restored afterwards."""
    disabled = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)
