"""The CI output formats (markdown, junit, sarif, github) from synthetic reports: no torch, no CLI.

Markdown is compared with golden files (UPDATE_GOLDEN=1 rewrites them); the machine formats are parsed back
and checked against what their consumers require.
"""

import io
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from gradcheck_cli.common.choices import FailOn, FindingKind, OutputFormat, Severity
from gradcheck_cli.common.stats import RecurrentStats
from gradcheck_cli.judge.diagnosis import Finding, diagnose
from gradcheck_cli.render.github import GithubRenderer, escape_data, escape_property
from gradcheck_cli.render.interface import RenderOptions, get_renderer
from gradcheck_cli.render.junit import CHECKS, JunitRenderer
from gradcheck_cli.render.markdown import MarkdownRenderer
from gradcheck_cli.render.sarif import SarifRenderer
from gradcheck_cli.report.report import FixTrial, Report
from gradcheck_cli.trials.verify import judge_trials
from tests.synthetic import geometric_result

GOLDEN = Path(__file__).parent / "golden"
SARIF_LEVELS = {"none", "note", "warning", "error"}
ANNOTATION = re.compile(r"^::(error|warning|notice)( [^:]*)?::")


def scanned_vanishing() -> Report:
    """A scan of a Python file: sigmoid MLP, vanishing, with the relu fix tried on a copy."""
    before = geometric_result(depth=40, gain=0.25, activations={"Sigmoid": 40}, weight_scale=0.577)
    after = geometric_result(depth=40, gain=1.0, activations={"ReLU": 40}, weight_scale=1.414)
    target = "examples/vanishing_mlp.py"
    report = Report(f"{target} (Sequential)", before, diagnose(before), target=target)
    report.source_path, report.source_line = target, 12
    fixed = Report(f"{target} (Sequential)", after, diagnose(after))
    report.fix_trials = [
        FixTrial("relu", "activation: sigmoid -> relu, init: default -> kaiming", fixed),
        FixTrial("residual", "needs a forward that adds the skip", None),
    ]
    report.fix_trials = judge_trials(report, report.fix_trials)
    return report


def demo_recurrent() -> Report:
    """The demo: no target and no source file."""
    result = geometric_result(depth=1)
    result.structure.activations, result.structure.recurrent = {}, {"RNN(tanh)": 1}
    result.recurrent = [RecurrentStats("rnn", "RNN", [0.55 ** (29 - t) for t in range(30)])]
    return Report("RNN depth 1, 30 steps, tanh", result, diagnose(result))


def warnings_only() -> Report:
    """Two warnings and an info finding, no error: healthy verdict, fails only with --fail-on warning."""
    result = geometric_result(depth=20, gain=0.85, relative_grad=300)
    report = Report("models/blocks.py (Net)", result, diagnose(result), target="models/blocks.py:Net")
    report.source_path = "models/blocks.py"  # a saved model or a file whose line is unknown
    report.diagnosis.findings.append(
        Finding(
            FindingKind.ZERO_INIT,
            Severity.INFO,
            ["layers.3"],
            "1 zero-initialized layer(s) (layers.3) block the gradient to 1 layer(s) at initialization, by design.",
            {"zero_init_layers": 1},
        )
    )
    return report


def exploding_with_warning() -> Report:
    result = geometric_result(depth=20, gain=0.85, relative_grad=2e4)
    return Report("models/big.py (Big)", result, diagnose(result), target="models/big.py", source_path="models/big.py")


def healthy() -> Report:
    result = geometric_result(depth=6, gain=1.0)
    return Report("examples/healthy_resnet.py (ResNet)", result, diagnose(result), target="examples/healthy_resnet.py")


def baseline_regressed() -> Report:
    """Healthy on its own, but worse than the saved baseline (--baseline)."""
    result = geometric_result(depth=6, gain=1.0)
    report = Report("examples/net.py (Net)", result, diagnose(result), target="examples/net.py")
    report.source_path, report.source_line = "examples/net.py", 7
    report.baseline = object()  # a comparison was made; the renderers only ask whether there was one
    report.diagnosis.findings.append(
        Finding(
            FindingKind.BASELINE_REGRESSION,
            Severity.ERROR,
            ["layers.0"],
            "Worse than the baseline: backward signal input/output 10^-0.1 -> 10^-1.2.",
            {"regressions": 1},
        )
    )
    return report


ALL = [scanned_vanishing, demo_recurrent, warnings_only, exploding_with_warning, healthy, baseline_regressed]


def render(output_format: OutputFormat, reports: list[Report], **options) -> str:
    stream = io.StringIO()
    renderer = get_renderer(output_format)
    if len(reports) == 1:
        renderer.render(reports[0], stream, RenderOptions(**options))
    else:
        renderer.render_many(reports, stream, RenderOptions(**options))
    return stream.getvalue()


def failing(finding: Finding, fail_on: FailOn) -> bool:
    return fail_on is not FailOn.NEVER and finding.severity.rank >= Severity(fail_on.value).rank


@pytest.mark.parametrize(
    ("output_format", "cls"),
    [
        (OutputFormat.MARKDOWN, MarkdownRenderer),
        (OutputFormat.JUNIT, JunitRenderer),
        (OutputFormat.SARIF, SarifRenderer),
        (OutputFormat.GITHUB, GithubRenderer),
    ],
)
def test_get_renderer_returns_the_format_class(output_format, cls):
    assert type(get_renderer(output_format)) is cls


# Markdown


MARKDOWN_CASES = {
    "markdown_one.md": lambda: render(OutputFormat.MARKDOWN, [scanned_vanishing()]),
    "markdown_many.md": lambda: render(OutputFormat.MARKDOWN, [factory() for factory in ALL]),
}


@pytest.mark.parametrize("name", sorted(MARKDOWN_CASES))
def test_markdown_golden(name):
    text = MARKDOWN_CASES[name]()
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_markdown_has_a_heading_per_target_and_no_ansi():
    reports = [factory() for factory in ALL]
    text = render(OutputFormat.MARKDOWN, reports)
    assert "\x1b" not in text
    assert text.splitlines()[0] == "## gradcheck: **EXPLODING** (6 targets: 1 exploding, 2 vanishing, 3 healthy)"
    headings = [line for line in text.splitlines() if line.startswith("### gradcheck: ")]
    assert len(headings) == len(reports)
    assert headings[0] == "### gradcheck: examples/vanishing\\_mlp.py (Sequential): **VANISHING**"
    fixes = sum(len(finding.fixes) for report in reports for finding in report.diagnosis.findings)
    assert text.count("<details><summary>fix ") == text.count("</details>") == fixes


def test_markdown_escapes_markup_in_the_message():
    report = healthy()
    report.diagnosis.findings.append(
        Finding(FindingKind.ZERO_GRADIENT, Severity.WARNING, ["a"], "> a | b <tag>\nsecond *line*", {})
    )
    text = render(OutputFormat.MARKDOWN, [report])
    row = next(line for line in text.splitlines() if "`zero_gradient`" in line and line.startswith("| 1 "))
    assert row == "| 1 | warning | `zero_gradient` | \\> a \\| b &lt;tag> second \\*line\\* | 1 |"


# JUnit


def suites_of(xml_text: str) -> ET.Element:
    assert xml_text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(xml_text.split("\n", 1)[1])


@pytest.mark.parametrize("fail_on", list(FailOn))
def test_junit_counts_and_required_fields(fail_on):
    reports = [factory() for factory in ALL]
    root = suites_of(render(OutputFormat.JUNIT, reports, fail_on=fail_on))
    assert root.tag == "testsuites" and root.get("name") == "gradcheck"
    suites = root.findall("testsuite")
    assert [suite.get("name") for suite in suites] == [report.target or report.title for report in reports]
    for suite, report in zip(suites, reports):
        cases = suite.findall("testcase")
        assert [case.get("name") for case in cases] == [kind.value for kind in CHECKS] + ["verdict"]
        assert int(suite.get("skipped")) == sum(case.find("skipped") is not None for case in cases)
        assert all(case.get("classname") == f"gradcheck.{suite.get('name')}" for case in cases)
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == sum(case.find("failure") is not None for case in cases)
        assert suite.get("errors") == "0" and float(suite.get("time")) == pytest.approx(report.result.seconds)
        for failure in suite.iter("failure"):
            assert failure.get("message") and failure.get("type") and failure.text
    assert (
        int(root.get("tests")) == sum(int(suite.get("tests")) for suite in suites) == (len(CHECKS) + 1) * len(reports)
    )
    for what in ("failures", "skipped"):
        assert int(root.get(what)) == sum(int(suite.get(what)) for suite in suites)


@pytest.mark.parametrize("fail_on", list(FailOn))
@pytest.mark.parametrize("factory", ALL)
def test_junit_fails_exactly_the_checks_at_or_above_fail_on(factory, fail_on):
    report = factory()
    suite = suites_of(render(OutputFormat.JUNIT, [report], fail_on=fail_on)).find("testsuite")
    failed = {case.get("name") for case in suite.findall("testcase") if case.find("failure") is not None}
    expected = {f.kind.value for f in report.diagnosis.findings if f.kind in CHECKS and failing(f, fail_on)}
    assert failed == expected | ({"verdict"} if report.fails(fail_on) else set())
    for case in suite.findall("testcase"):
        failure = case.find("failure")
        if failure is not None and case.get("name") != "verdict":
            assert failure.get("type") == case.get("name")


def test_junit_warnings_fail_only_with_fail_on_warning():
    report = warnings_only()
    assert report.verdict.value == "healthy"
    for fail_on, failures in ((FailOn.ERROR, 0), (FailOn.WARNING, 3), (FailOn.NEVER, 0)):
        suite = suites_of(render(OutputFormat.JUNIT, [report], fail_on=fail_on)).find("testsuite")
        assert int(suite.get("failures")) == failures, fail_on
    # Below fail_on the warnings are not lost: they are the check's output.
    suite = suites_of(render(OutputFormat.JUNIT, [report], fail_on=FailOn.ERROR)).find("testsuite")
    case = next(case for case in suite.findall("testcase") if case.get("name") == "vanishing_gradient")
    assert case.find("failure") is None and "The gradient weakens toward the input" in case.find("system-out").text
    # The info finding is not a check: it shows in the verdict case's output and never fails.
    verdict = next(case for case in suite.findall("testcase") if case.get("name") == "verdict")
    assert "zero-initialized" in verdict.find("system-out").text


def test_junit_lists_the_same_checks_on_every_run():
    assert [kind.value for kind in CHECKS] == [
        "vanishing_gradient",
        "exploding_gradient",
        "normalized_growth",
        "vanishing_activation",
        "exploding_activation",
        "large_relative_gradient",
        "zero_gradient",
        "nonfinite",
        "vanishing_through_time",
        "exploding_through_time",
        "baseline_regression",
        "fp16_range",
    ]


def test_junit_baseline_check_is_skipped_without_a_baseline():
    def case(report: Report) -> ET.Element:
        suite = suites_of(render(OutputFormat.JUNIT, [report])).find("testsuite")
        return next(case for case in suite.findall("testcase") if case.get("name") == "baseline_regression")

    assert case(healthy()).find("skipped") is not None
    regressed = case(baseline_regressed())
    assert regressed.find("skipped") is None and regressed.find("failure").get("type") == "baseline_regression"


def test_junit_failure_body_has_causes_and_first_fix():
    report = scanned_vanishing()
    suite = suites_of(render(OutputFormat.JUNIT, [report])).find("testsuite")
    failure = next(case for case in suite.findall("testcase") if case.get("name") == "vanishing_gradient").find(
        "failure"
    )
    finding = report.diagnosis.findings[0]
    assert failure.get("message") == finding.message
    assert finding.causes[0].summary in failure.text and finding.fixes[0].code.strip() in failure.text
    assert finding.fixes[1].title not in failure.text


def test_junit_stays_valid_xml_with_control_characters():
    report = healthy()
    report.diagnosis.findings.append(Finding(FindingKind.NONFINITE, Severity.ERROR, ["x"], "bad \x1b[31m\x00 & <", {}))
    suite = suites_of(render(OutputFormat.JUNIT, [report])).find("testsuite")
    failure = next(case for case in suite.findall("testcase") if case.get("name") == "nonfinite").find("failure")
    assert failure.get("message").startswith("bad ") and failure.get("message").endswith(" & <")


# SARIF


def sarif_of(reports: list[Report]) -> dict:
    def no_constants(name):
        raise AssertionError(f"SARIF is JSON: {name} is not allowed")

    return json.loads(render(OutputFormat.SARIF, reports), parse_constant=no_constants)


def test_sarif_required_fields():
    reports = [factory() for factory in ALL]
    log = sarif_of(reports)
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    (run,) = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "gradcheck" and driver["version"] and driver["informationUri"].startswith("https://")
    rule_ids = [rule["id"] for rule in driver["rules"]]
    assert rule_ids == [kind.value for kind in FindingKind]
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["fullDescription"]["text"]
        assert rule["defaultConfiguration"]["level"] in SARIF_LEVELS
    findings = [(report, finding) for report in reports for finding in report.diagnosis.findings]
    assert len(run["results"]) == len(findings)
    level = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
    for result, (report, finding) in zip(run["results"], findings):
        assert result["ruleId"] == finding.kind.value
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in SARIF_LEVELS and result["level"] == level[finding.severity]
        assert result["message"]["text"].startswith(finding.message)
        if finding.causes:
            assert finding.causes[0].summary in result["message"]["text"]
        if finding.fixes:
            assert finding.fixes[0].title in result["message"]["text"]
        assert result["properties"]["layers"] == finding.layers
        assert result["properties"]["target"] == (report.target or report.title)
        assert result["properties"]["evidence"] == json.loads(json.dumps(finding.evidence))
        assert re.fullmatch(r"[0-9a-f]{32}", next(iter(result["partialFingerprints"].values())))


def test_sarif_every_finding_kind_has_a_described_rule():
    from gradcheck_cli.render.sarif import RULES

    assert set(RULES) == set(FindingKind)


def test_sarif_locations():
    results = sarif_of([scanned_vanishing(), warnings_only(), demo_recurrent()])["runs"][0]["results"]
    by_rule = {}
    for result in results:  # the first result of each rule: the scanned report's
        by_rule.setdefault(result["ruleId"], result)
    physical = by_rule["vanishing_gradient"]["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"] == {"uri": "examples/vanishing_mlp.py", "uriBaseId": "%SRCROOT%"}
    assert physical["region"] == {"startLine": 12}
    unknown_line = by_rule["large_relative_gradient"]["locations"][0]["physicalLocation"]
    assert unknown_line["artifactLocation"]["uri"] == "models/blocks.py" and "region" not in unknown_line
    demo = by_rule["vanishing_through_time"]["locations"][0]
    assert "physicalLocation" not in demo
    assert demo["logicalLocations"][0]["name"] == "RNN depth 1, 30 steps, tanh"


def test_sarif_uri_is_relative_with_forward_slashes():
    report = scanned_vanishing()
    report.source_path = os.path.join(os.getcwd(), "examples", "my model.py")
    (result,) = sarif_of([report])["runs"][0]["results"]
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "examples/my%20model.py"


def test_sarif_fingerprints_are_stable_and_tell_targets_and_kinds_apart():
    first = [r["partialFingerprints"] for r in sarif_of([scanned_vanishing(), exploding_with_warning()])["runs"][0]["results"]]  # fmt: skip
    again = [r["partialFingerprints"] for r in sarif_of([scanned_vanishing(), exploding_with_warning()])["runs"][0]["results"]]  # fmt: skip
    assert first == again
    assert len({json.dumps(fingerprint) for fingerprint in first}) == len(first) == 3


def test_sarif_nonfinite_evidence_is_null():
    report = healthy()
    report.diagnosis.findings.append(
        Finding(FindingKind.NONFINITE, Severity.ERROR, ["x"], "NaN loss", {"loss": float("nan")})
    )
    (result,) = sarif_of([report])["runs"][0]["results"]
    assert result["properties"]["evidence"] == {"loss": None}


# GitHub


def test_github_annotations_and_summaries():
    reports = [factory() for factory in ALL]
    lines = render(OutputFormat.GITHUB, reports).splitlines()
    findings = [(report, finding) for report in reports for finding in report.diagnosis.findings]
    annotations, summaries = lines[: len(findings)], lines[len(findings) :]
    command = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}
    for line, (report, finding) in zip(annotations, findings):
        match = ANNOTATION.match(line)
        assert match and match.group(1) == command[finding.severity]
        properties = match.group(2) or ""
        assert f"title=gradcheck {finding.kind.value}" in properties
        assert ("file=" in properties) == (report.source_path is not None)
        assert ("line=" in properties) == (report.source_line is not None)
    assert annotations[0].startswith(
        "::error file=examples/vanishing_mlp.py,line=12,title=gradcheck vanishing_gradient::"
    )
    assert summaries == [
        "gradcheck: examples/vanishing_mlp.py (Sequential): vanishing (1 error, 0 warnings)",
        "gradcheck: RNN depth 1, 30 steps, tanh: vanishing (1 error, 0 warnings)",
        "gradcheck: models/blocks.py (Net): healthy (0 errors, 2 warnings, 1 info)",
        "gradcheck: models/big.py (Big): exploding (1 error, 1 warning)",
        "gradcheck: examples/healthy_resnet.py (ResNet): healthy (0 errors, 0 warnings)",
        "gradcheck: examples/net.py (Net): healthy (1 error, 0 warnings)",
    ]
    assert not any(line.startswith("::") for line in summaries)


def test_github_escaping():
    assert escape_data("50% done\r\nnext: a, b") == "50%25 done%0D%0Anext: a, b"
    assert escape_property("dir,x/a:b%\n.py") == "dir%2Cx/a%3Ab%25%0A.py"
    report = healthy()
    report.source_path, report.source_line = "dir,x/a:b.py", 3
    report.diagnosis.findings.append(
        Finding(FindingKind.ZERO_GRADIENT, Severity.WARNING, ["a"], "100% blocked\nhere: a, b", {})
    )
    (line, _summary) = render(OutputFormat.GITHUB, [report]).splitlines()
    assert line == "::warning file=dir%2Cx/a%3Ab.py,line=3,title=gradcheck zero_gradient::100%25 blocked%0Ahere: a, b"
