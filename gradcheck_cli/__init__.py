"""gradcheck: find vanishing and exploding gradients in PyTorch models, and the fix.

Importing this package does not import torch; the probing API is loaded on first use so that
``gradcheck --help`` starts instantly.
"""

__version__ = "0.1.0"

# Public API, resolved lazily (PEP 562) so that importing the package stays torch-free.
_LAZY = {
    "probe_model": "gradcheck_cli.probe",
    "Batch": "gradcheck_cli.batches",
    "diagnose": "gradcheck_cli.diagnosis",
    "Thresholds": "gradcheck_cli.diagnosis",
    "check_model": "gradcheck_cli.api",
    "check": "gradcheck_cli.checks",
    "assert_gradients_healthy": "gradcheck_cli.checks",
    "Report": "gradcheck_cli.report",
    "GradcheckError": "gradcheck_cli.errors",
    "Monitor": "gradcheck_cli.monitor",
    "GradientProblemError": "gradcheck_cli.monitor",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gradcheck_cli' has no attribute {name!r}")
