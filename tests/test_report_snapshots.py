"""JSON reports against the snapshots in tests/snapshots/reports/ (issue 24: a refactoring leaves every report
as it was). Each case is regenerated into a temporary folder and compared with its snapshot, floats exactly.
UPDATE_SNAPSHOTS=1 rewrites them (`python -m tests.snapshots.make` does the same outside pytest).

The snapshots hold only on a machine like the one that made them (tests/snapshots/make.py says why):
elsewhere the comparison is skipped; regenerate them there first to compare before and after a change.
"""

import json
import math
import os
from typing import Any

import pytest

from tests.snapshots import make

# Measured: two runs of every case, in one process and in two at once, gave the same bits: floats compare
# exactly. A change that moves the last bits on purpose (another summation order) says so in its issue, with
# the largest relative change measured, and raises this to it or regenerates the snapshots.
RELATIVE_TOLERANCE = 0.0
SHOWN = 20  # differences printed per case
# The cases that depend on the transformers version besides the environment every case depends on.
TRANSFORMERS_CASES = {make.example_name(target) for target in make.NEEDS}


def differences(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Each place where the two JSON values differ, as 'PATH: snapshot X, now Y'; key order counts."""
    if type(expected) is not type(actual):
        return [f"{path}: snapshot {expected!r}, now {actual!r}"]
    if isinstance(expected, dict):
        found = [f"{path}.{key}: snapshot {expected[key]!r}, now missing" for key in expected if key not in actual]
        found += [f"{path}.{key}: not in the snapshot, now {actual[key]!r}" for key in actual if key not in expected]
        if not found and list(expected) != list(actual):
            found.append(f"{path}: keys in another order: snapshot {list(expected)}, now {list(actual)}")
        for key in expected:
            if key in actual:
                found += differences(expected[key], actual[key], f"{path}.{key}")
        return found
    if isinstance(expected, list):
        if len(expected) != len(actual):
            return [f"{path}: snapshot {len(expected)} items, now {len(actual)}: {expected!r} -> {actual!r}"[:400]]
        return [
            found
            for index, pair in enumerate(zip(expected, actual))
            for found in differences(*pair, f"{path}[{index}]")
        ]
    if isinstance(expected, float) and math.isclose(expected, actual, rel_tol=RELATIVE_TOLERANCE, abs_tol=0.0):
        return []
    return [] if expected == actual else [f"{path}: snapshot {expected!r}, now {actual!r}"]


def unlike_environment(name: str) -> list[str]:
    """What differs between this machine and the one that made the snapshots, as far as case `name` cares."""
    recorded = json.loads(make.ENVIRONMENT.read_text())
    current = make.environment()
    keys = [key for key in current if key != "transformers" or name in TRANSFORMERS_CASES]
    return [
        f"{key} {recorded.get(key)!r} there, {current[key]!r} here" for key in keys if recorded.get(key) != current[key]
    ]


def test_every_case_has_a_snapshot_and_every_snapshot_a_case():
    snapshots = sorted(path.stem for path in make.REPORTS.glob("*.json"))
    assert snapshots == sorted(make.cases()), "run `python -m tests.snapshots.make` (or UPDATE_SNAPSHOTS=1)"


def test_the_files_that_need_flags_still_need_them():
    """SKIPPED names files that do not scan without flags; one that does must become a case."""
    from gradcheck_cli.common.errors import GradcheckError

    for target in make.SKIPPED:
        with pytest.raises(GradcheckError):
            make.scan_example(target)


def test_differences_name_the_path_and_both_values():
    snapshot = {"layers": [{"name": "a", "grad_norm": 1.0, "calls": 1}], "verdict": "healthy"}
    now = {"layers": [{"name": "a", "grad_norm": 1.0000000000000002, "calls": True}], "verdict": "healthy"}
    assert differences(snapshot, now) == [
        "$.layers[0].grad_norm: snapshot 1.0, now 1.0000000000000002",
        "$.layers[0].calls: snapshot 1, now True",
    ]
    assert differences(snapshot, {"verdict": "healthy", "layers": snapshot["layers"]}) == [
        "$: keys in another order: snapshot ['layers', 'verdict'], now ['verdict', 'layers']"
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(make.cases()))
def test_report_matches_its_snapshot(name, tmp_path):
    if name in (skipped := make.skipped_cases()):
        pytest.skip(skipped[name])
    path = make.REPORTS / f"{name}.json"
    text = make.snapshot(name)
    if os.environ.get("UPDATE_SNAPSHOTS"):
        path.write_text(text)
        make.write_environment()
    if unlike := unlike_environment(name):
        pytest.skip(f"the snapshots were made elsewhere ({'; '.join(unlike)}); regenerate them here to compare")
    regenerated = tmp_path / path.name
    regenerated.write_text(text)
    found = differences(json.loads(path.read_text()), json.loads(text))
    shown = "\n".join(found[:SHOWN]) + (f"\n... {len(found) - SHOWN} more" if len(found) > SHOWN else "")
    if found:
        pytest.fail(f"{name}: {len(found)} differences (diff {path} {regenerated}):\n{shown}", pytrace=False)
