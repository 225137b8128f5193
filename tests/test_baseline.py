"""Baselines as pure functions: synthetic reports saved, loaded and compared, without torch."""

import json
import math
import os

import pytest

from gradcheck_cli.common.errors import GradcheckError, InvalidOptionError
from gradcheck_cli.common.stats import LayerStats, RecurrentStats
from gradcheck_cli.judge.diagnosis import diagnose
from gradcheck_cli.report.baseline import (
    BASELINE_SCHEMA_VERSION,
    baseline_entry,
    baseline_key,
    compare,
    load_baseline,
    regression_message,
    save_baseline,
)
from gradcheck_cli.report.report import Report
from tests.synthetic import geometric_result


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # targets are relative to the working folder, as on the command line


def make_report(result=None, target="model.py"):
    result = result if result is not None else geometric_result()
    return Report(f"{target} (synthetic)", result, diagnose(result), target=target)


def scaled(layer_index, factor, **kwargs):
    """A healthy stack with one layer's backward signal multiplied by ``factor``."""
    result = geometric_result(**kwargs)
    result.layers[layer_index].backward *= factor
    return make_report(result)


def saved_entry(tmp_path, report):
    path = tmp_path / "baseline.json"
    save_baseline([report], path)
    return load_baseline(path)[report.target]


def test_round_trip_of_an_unchanged_report_has_no_regression_and_no_change(tmp_path):
    report = make_report()
    entry = saved_entry(tmp_path, report)
    assert entry == baseline_entry(report)
    comparison = compare(make_report(), entry)
    assert not comparison.regressed
    assert comparison.changes == []
    assert comparison.regressions == []
    assert regression_message(comparison) == ""


def test_entry_records_profile_layers_time_profiles_and_findings():
    report = make_report(geometric_result(gain=0.5))
    entry = baseline_entry(report)
    assert entry["target"] == "model.py"
    assert entry["verdict"] == "vanishing"
    assert set(entry["profile"]) == {"decades", "gain_per_layer", "forward_decades"}
    assert entry["profile"]["decades"] < -2
    first = entry["layers"][0]
    assert set(first) == {"name", "type", "status", "backward", "ratio", "weight_grad_norm", "relative_grad"}
    assert first["name"] == "layers.0" and first["status"] == "vanishing"
    assert first["ratio"] == pytest.approx(report.diagnosis.ratios["layers.0"], rel=1e-3)
    assert entry["time_profiles"] == []
    assert {"kind": "vanishing_gradient", "severity": "error"} in entry["findings"]


def test_target_falls_back_to_the_title():
    result = geometric_result()
    report = Report("MLP depth 20", result, diagnose(result))
    assert baseline_entry(report)["target"] == "MLP depth 20"


def test_a_layer_scaled_down_a_thousand_times_regresses_and_is_named_with_its_factor(tmp_path):
    entry = saved_entry(tmp_path, make_report())
    comparison = compare(scaled(5, 1e-3), entry)
    assert comparison.regressed
    assert comparison.regressed_layers == ["layers.5"]
    change = comparison.changes[0]
    assert (change.layer, change.what) == ("layers.5", "ratio")
    assert change.factor == pytest.approx(1000.0, rel=1e-3)
    assert change.before == 1.0 and change.after == pytest.approx(1e-3)
    assert comparison.regressions == ["layers.5 ratio 1.0e+00 -> 1.0e-03 (x1.0e+03)"]
    message = regression_message(comparison)
    assert message.startswith("Gradient health regressed against the baseline")
    assert "layers.5 ratio 1.0e+00 -> 1.0e-03 (x1.0e+03)" in message
    assert "--save-baseline" in message


def test_a_layer_scaled_up_regresses_too():
    comparison = compare(scaled(5, 1e3), baseline_entry(make_report()))
    assert comparison.regressed_layers == ["layers.5"]
    assert comparison.changes[0].factor == pytest.approx(1000.0, rel=1e-3)


def test_tolerance_is_respected():
    entry = baseline_entry(make_report())
    fivefold = scaled(5, 1 / 5)
    passing = compare(fivefold, entry, tolerance=10)
    assert not passing.regressed
    assert [(c.layer, c.regression) for c in passing.changes] == [("layers.5", False)]  # listed, not failing
    failing = compare(fivefold, entry, tolerance=3)
    assert failing.regressed
    assert failing.regressed_layers == ["layers.5"]


def test_small_moves_are_not_listed_as_changes():
    comparison = compare(scaled(5, 1.5), baseline_entry(make_report()))
    assert comparison.changes == [] and not comparison.regressed


@pytest.mark.parametrize("tolerance", [1.0, 0.5, -3, math.inf, math.nan])
def test_tolerance_must_be_a_factor_above_one(tolerance):
    with pytest.raises(InvalidOptionError, match="tolerance"):
        compare(make_report(), baseline_entry(make_report()), tolerance=tolerance)


def test_a_gradient_that_became_zero_regresses():
    comparison = compare(scaled(5, 0.0), baseline_entry(make_report()))
    change = comparison.changes[0]
    assert (change.layer, change.what, change.after, change.factor) == ("layers.5", "became zero", 0.0, math.inf)
    assert "layers.5 gradient 1.0e+00 -> 0 (became zero)" in comparison.regressions


def test_a_gradient_that_was_zero_regresses():
    comparison = compare(make_report(), baseline_entry(scaled(5, 0.0)))
    assert [(c.layer, c.what) for c in comparison.changes] == [("layers.5", "was zero")]
    assert comparison.regressed_layers == ["layers.5"]


def test_a_new_finding_regresses():
    result = geometric_result()
    result.layers[3].relative_grad = 1e3  # past the warning line (1e2), below the error line (1e4)
    report = make_report(result)
    assert report.verdict.value == "healthy"
    comparison = compare(report, baseline_entry(make_report()))
    assert comparison.regressions == ["new warning finding large_relative_gradient"]
    assert comparison.changes == []  # the layer's backward signal did not move


def test_a_finding_going_from_warning_to_error_regresses_and_back_does_not():
    warning, error = geometric_result(), geometric_result()
    warning.layers[3].relative_grad = 1e3
    error.layers[3].relative_grad = 1e5
    worse = compare(make_report(error), baseline_entry(make_report(warning)))
    assert "finding large_relative_gradient warning -> error" in worse.regressions
    better = compare(make_report(warning), baseline_entry(make_report(error)))
    assert not better.regressed


def test_a_worse_verdict_regresses():
    vanishing = make_report(geometric_result(gain=0.5))
    entry = baseline_entry(vanishing)
    assert compare(vanishing, entry).regressions == []
    entry["verdict"] = "healthy"  # the same findings under a better verdict: only the verdict differs
    assert compare(vanishing, entry).regressions == ["verdict healthy -> vanishing"]


def test_a_vanishing_model_against_a_healthy_baseline_lists_the_verdict_first():
    comparison = compare(make_report(geometric_result(gain=0.5)), baseline_entry(make_report()))
    assert comparison.regressions[:2] == ["verdict healthy -> vanishing", "new error finding vanishing_gradient"]
    assert comparison.regressions[2].startswith("the depth trend 10^+0.0 -> 10^-5.7")
    factors = [c.factor for c in comparison.changes]
    assert factors == sorted(factors, reverse=True)
    assert comparison.changes[0].layer == "layers.0"


def test_the_depth_trend_regresses_past_log10_tolerance_decades():
    # gain 0.9 over 20 layers: D = -0.85, below every finding's line
    report = make_report(geometric_result(gain=0.9))
    assert report.diagnosis.findings == []
    entry = baseline_entry(make_report())
    assert not any("depth trend" in r for r in compare(report, entry, tolerance=10).regressions)
    assert any("depth trend" in r for r in compare(report, entry, tolerance=3).regressions)


def test_an_added_or_removed_layer_is_a_change_not_a_regression():
    entry = baseline_entry(make_report())
    removed = geometric_result()
    del removed.layers[10]
    comparison = compare(make_report(removed), entry)
    assert not comparison.regressed
    assert [(c.layer, c.what, c.before, c.after, c.factor) for c in comparison.changes] == [
        ("layers.10", "layer removed", 1.0, None, None)
    ]
    added = geometric_result()
    extra = LayerStats(name="extra", type="Linear", calls=1, weight_norm=1.0, grad_norm=1.0, backward=1.0)
    added.layers.insert(10, extra)
    comparison = compare(make_report(added), entry)
    assert not comparison.regressed
    assert [(c.layer, c.what) for c in comparison.changes] == [("extra", "new layer")]


def test_the_gradient_through_time_regresses_like_the_depth_trend():
    flat, decaying = geometric_result(), geometric_result()
    flat.recurrent = [RecurrentStats("rnn", "RNN", [1.0] * 10)]
    decaying.recurrent = [RecurrentStats("rnn", "RNN", [0.5 ** (9 - t) for t in range(10)])]
    entry = baseline_entry(make_report(flat))
    assert entry["time_profiles"] == [{"name": "rnn", "decades": 0.0}]
    regressions = compare(make_report(decaying), entry).regressions
    assert "new error finding vanishing_through_time" in regressions
    assert "the gradient through time in rnn 10^+0.0 -> 10^-2.7 (2.7 decades steeper)" in regressions


def test_new_and_removed_layers_come_after_moved_ones():
    result = geometric_result()
    result.layers[5].backward *= 1 / 5
    del result.layers[10]
    changes = compare(make_report(result), baseline_entry(make_report())).changes
    assert [c.what for c in changes] == ["ratio", "layer removed"]


def test_message_lists_at_most_five_items_then_how_many_more():
    comparison = compare(make_report(geometric_result(gain=0.5)), baseline_entry(make_report()))
    assert len(comparison.regressions) > 5
    message = regression_message(comparison)
    assert message.count(";") == 5
    assert f"and {len(comparison.regressions) - 5} more." in message
    assert "\n" not in message


def test_non_finite_figures_are_saved_as_null(tmp_path):
    result = geometric_result()
    result.layers[2].backward = math.nan
    result.layers[2].backward_nonfinite = True
    result.layers[4].relative_grad = math.inf
    path = tmp_path / "baseline.json"
    save_baseline([make_report(result)], path)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    layers = json.loads(text)["targets"]["model.py"]["layers"]
    assert layers[2]["backward"] is None and layers[2]["ratio"] is None
    assert layers[4]["relative_grad"] is None


def test_file_has_a_schema_version_the_tool_and_several_targets(tmp_path):
    path = tmp_path / "baseline.json"
    reports = [make_report(target="a.py"), make_report(geometric_result(gain=0.5), target="b.py")]
    save_baseline(reports, path)
    document = json.loads(path.read_text())
    assert document["schema_version"] == BASELINE_SCHEMA_VERSION
    assert document["tool"]["name"] == "gradcheck" and document["tool"]["version"]
    entries = load_baseline(path)
    assert list(entries) == ["a.py", "b.py"]
    for report in reports:
        assert not compare(report, entries[report.target]).regressed
    assert compare(reports[1], entries["a.py"]).regressed


def test_two_reports_with_the_same_target_are_refused(tmp_path):
    path = tmp_path / "baseline.json"
    with pytest.raises(GradcheckError, match="'model.py'"):
        save_baseline([make_report(), make_report()], path)
    assert not path.exists()


def test_atomic_write_leaves_no_temporary_file_and_replaces_the_old_one(tmp_path):
    path = tmp_path / "baseline.json"
    save_baseline([make_report(target="old.py")], path)
    save_baseline([make_report(target="new.py")], path)
    assert os.listdir(tmp_path) == ["baseline.json"]
    assert list(load_baseline(path)) == ["new.py"]


def test_writing_to_a_directory_fails_and_leaves_nothing_behind(tmp_path):
    folder = tmp_path / "baseline.json"
    folder.mkdir()
    with pytest.raises(GradcheckError, match="directory"):
        save_baseline([make_report()], folder)
    assert os.listdir(tmp_path) == ["baseline.json"]
    assert os.listdir(folder) == []


def test_a_failed_replace_keeps_the_old_baseline_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "baseline.json"
    save_baseline([make_report(target="old.py")], path)
    before = path.read_bytes()

    def refuse(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(GradcheckError, match="Cannot write the baseline to .*Permission denied"):
        save_baseline([make_report(target="new.py")], path)
    assert os.listdir(tmp_path) == ["baseline.json"]
    assert path.read_bytes() == before


def test_a_missing_folder_is_created(tmp_path):
    path = tmp_path / ".gradcheck" / "baseline.json"
    save_baseline([make_report()], path)
    assert list(load_baseline(path)) == ["../model.py"]  # keyed relative to the baseline's folder


def test_load_a_missing_file(tmp_path):
    path = tmp_path / "missing.json"
    with pytest.raises(GradcheckError) as error:
        load_baseline(path)
    assert str(error.value) == f"No baseline at {path}: create it with --save-baseline."


def test_load_a_directory(tmp_path):
    with pytest.raises(GradcheckError, match="is a directory.*--save-baseline"):
        load_baseline(tmp_path)


@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe\xfa"])
def test_load_a_file_that_is_not_json(tmp_path, content):
    path = tmp_path / "baseline.json"
    path.write_bytes(content)
    with pytest.raises(GradcheckError, match="is not JSON.*--save-baseline") as error:
        load_baseline(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ([1, 2], "is not a gradcheck baseline"),
        ({"targets": {}}, "is not a gradcheck baseline"),
        ({"schema_version": "2.0", "tool": {"name": "other"}, "targets": {}}, "is not a gradcheck baseline"),
        ({"schema_version": "2.0", "tool": {"name": "gradcheck"}, "layers": []}, "is a gradcheck report"),
        ({"schema_version": "3.0", "tool": {"name": "gradcheck"}, "targets": {}}, "schema version '3.0'"),
        ({"schema_version": "1.0", "tool": {"name": "gradcheck"}, "targets": {}}, "schema version '1.0'"),
        ({"tool": {"name": "gradcheck"}, "targets": {}}, "schema version None"),
        ({"schema_version": "2.0", "tool": {"name": "gradcheck"}, "targets": []}, "has no targets"),
        ({"schema_version": "2.0", "tool": {"name": "gradcheck"}, "targets": {"m.py": {}}}, "target 'm.py'"),
    ],
)
def test_load_a_file_of_the_wrong_shape(tmp_path, document, expected):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(document))
    with pytest.raises(GradcheckError, match="--save-baseline") as error:
        load_baseline(path)
    assert expected in str(error.value)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda e: e.update(verdict="fine"), "unknown verdict 'fine'"),
        (lambda e: e.pop("profile"), "has no profile"),
        (lambda e: e.update(layers=[{"type": "Linear"}]), "named layers"),
        (lambda e: e["layers"][0].update(ratio="big"), "'layers.0'"),
        (lambda e: e.update(findings=[{"kind": "vanishing_gradient", "severity": "fatal"}]), "known severity"),
    ],
)
def test_load_an_entry_of_the_wrong_shape(tmp_path, breakage, expected):
    path = tmp_path / "baseline.json"
    save_baseline([make_report()], path)
    document = json.loads(path.read_text())
    breakage(document["targets"]["model.py"])
    path.write_text(json.dumps(document))
    with pytest.raises(GradcheckError, match=expected):
        load_baseline(path)


def test_a_newer_minor_schema_version_is_read(tmp_path):
    path = tmp_path / "baseline.json"
    save_baseline([make_report()], path)
    document = json.loads(path.read_text())
    document["schema_version"] = "2.3"
    path.write_text(json.dumps(document))
    assert not compare(make_report(), load_baseline(path)["model.py"]).regressed


def test_file_targets_are_keyed_relative_to_the_baseline_folder(tmp_path, monkeypatch):
    save_baseline([make_report()], tmp_path / "ci" / "base.json")
    assert list(load_baseline(tmp_path / "ci" / "base.json")) == ["../model.py"]
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")  # the same file, named from another folder
    report = make_report(target="../model.py")
    assert baseline_key(report, tmp_path / "ci") == "../model.py"
    assert baseline_key(make_report(target="pkg.models:build"), tmp_path / "ci") == "pkg.models:build"
