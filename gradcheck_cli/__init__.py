"""gradcheck: find vanishing and exploding gradients in PyTorch models, and the fix.

Importing this package does not import torch; the probing API is loaded on first use so that
``gradcheck --help`` starts instantly.
"""

__version__ = "0.1.0"

# Public API, resolved lazily (PEP 562) so that importing the package stays torch-free.
_LAZY = {
    "probe_model": "gradcheck_cli.measure.probe",
    "Batch": "gradcheck_cli.common.batches",
    "diagnose": "gradcheck_cli.judge.diagnosis",
    "Thresholds": "gradcheck_cli.judge.diagnosis",
    "check_model": "gradcheck_cli.examine.check_model",
    "check": "gradcheck_cli.scan.checks",
    "assert_gradients_healthy": "gradcheck_cli.scan.checks",
    "Report": "gradcheck_cli.report.report",
    "GradcheckError": "gradcheck_cli.common.errors",
    "Monitor": "gradcheck_cli.monitor.monitor",
    "GradientProblemError": "gradcheck_cli.monitor.monitor",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gradcheck_cli' has no attribute {name!r}")
