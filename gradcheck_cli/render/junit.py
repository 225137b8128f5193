"""``--format junit``: JUnit XML for test dashboards. One test suite per target; its test cases are the
checks, the same fixed list on every run (so a dashboard tracks each check's history), plus ``verdict``.

A check fails when a finding of its kind is at or above ``--fail-on``; findings below it are written to the
case's ``<system-out>``, so the report loses nothing and the dashboard stays green.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import TextIO

from gradcheck_cli.choices import FailOn, FindingKind, Severity
from gradcheck_cli.diagnosis import Finding
from gradcheck_cli.render.interface import RenderOptions
from gradcheck_cli.report import Report

# Every check a target is tested for, in a fixed order. zero_init is not a check: it is an info finding
# (a layer blocking the gradient on purpose) and goes to the verdict case's output.
CHECKS = [
    FindingKind.VANISHING_GRADIENT,
    FindingKind.EXPLODING_GRADIENT,
    FindingKind.VANISHING_ACTIVATION,
    FindingKind.EXPLODING_ACTIVATION,
    FindingKind.LARGE_RELATIVE_GRADIENT,
    FindingKind.ZERO_GRADIENT,
    FindingKind.NONFINITE,
    FindingKind.VANISHING_THROUGH_TIME,
    FindingKind.EXPLODING_THROUGH_TIME,
]
VERDICT_CASE = "verdict"
# XML 1.0 forbids most control characters even when escaped; a message must never make the file unreadable.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class JunitRenderer:
    def render(self, report: Report, stream: TextIO, options: RenderOptions) -> None:
        self.render_many([report], stream, options)

    def render_many(self, reports: list[Report], stream: TextIO, options: RenderOptions) -> None:
        root = ET.Element("testsuites", name="gradcheck")
        suites = [_suite(report, options.fail_on) for report in reports]
        root.extend(suites)
        _set_counts(root, suites, seconds=sum(report.result.seconds for report in reports))
        ET.indent(root)
        stream.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        stream.write(ET.tostring(root, encoding="unicode"))
        stream.write("\n")


def _suite(report: Report, fail_on: FailOn) -> ET.Element:
    name = report.target or report.title
    suite = ET.Element("testsuite", name=_clean(name))
    properties = ET.SubElement(suite, "properties")
    for key, value in (("title", report.title), ("verdict", report.verdict.value), ("fail_on", fail_on.value)):
        ET.SubElement(properties, "property", name=key, value=_clean(value))
    classname = _clean(f"gradcheck.{name}")
    findings = report.diagnosis.findings
    cases = []
    for kind in CHECKS:
        case = ET.SubElement(suite, "testcase", classname=classname, name=kind.value, time="0")
        of_kind = [finding for finding in findings if finding.kind is kind]
        failing = [finding for finding in of_kind if _fails(finding, fail_on)]
        if failing:
            message = failing[0].message if len(failing) == 1 else f"{len(failing)} findings: {failing[0].message}"
            failure = ET.SubElement(case, "failure", message=_clean(message), type=kind.value)
            failure.text = _clean("\n\n".join(_body(finding) for finding in failing))
        passing = [finding for finding in of_kind if finding not in failing]
        if passing:
            ET.SubElement(case, "system-out").text = _clean("\n\n".join(_body(finding) for finding in passing))
        cases.append(case)
    # The measurement's time goes on the verdict case, so the cases' times add up to the suite's.
    verdict = ET.SubElement(
        suite, "testcase", classname=classname, name=VERDICT_CASE, time=f"{report.result.seconds:.3f}"
    )
    summary = _summary(report)
    if report.fails(fail_on):
        ET.SubElement(verdict, "failure", message=_clean(summary), type=VERDICT_CASE).text = _clean(summary)
    unchecked = [finding for finding in findings if finding.kind not in CHECKS]
    verdict_out = "\n\n".join([summary, *(_body(finding) for finding in unchecked)])
    ET.SubElement(verdict, "system-out").text = _clean(verdict_out)
    cases.append(verdict)
    _set_counts(suite, cases, seconds=report.result.seconds)
    return suite


def _set_counts(element: ET.Element, children: list[ET.Element], seconds: float) -> None:
    """``tests`` and ``failures`` from the cases (or suites) themselves, so they cannot disagree."""
    if element.tag == "testsuites":
        tests = sum(int(child.get("tests", "0")) for child in children)
        failures = sum(int(child.get("failures", "0")) for child in children)
    else:
        tests = len(children)
        failures = sum(child.find("failure") is not None for child in children)
    element.set("tests", str(tests))
    element.set("failures", str(failures))
    element.set("errors", "0")
    element.set("skipped", "0")
    element.set("time", f"{seconds:.3f}")


def _fails(finding: Finding, fail_on: FailOn) -> bool:
    return fail_on is not FailOn.NEVER and finding.severity.rank >= Severity(fail_on.value).rank


def _body(finding: Finding) -> str:
    """The message, the layers, the causes and the first fix with its code."""
    lines = [f"{finding.severity.value} {finding.kind.value}: {finding.message}"]
    if finding.layers:
        lines.append(f"layers ({len(finding.layers)}): {', '.join(finding.layers)}")
    lines += [f"cause [{cause.id.value}]: {cause.summary}" for cause in finding.causes]
    if finding.fixes:
        fix = finding.fixes[0]
        lines += [f"fix [{fix.id}]: {fix.title}", fix.detail, "", fix.code.rstrip()]
    return "\n".join(lines)


def _summary(report: Report) -> str:
    counts = {severity: 0 for severity in Severity}
    for finding in report.diagnosis.findings:
        counts[finding.severity] += 1
    return (
        f"{report.title}: {report.verdict.value} ({counts[Severity.ERROR]} error(s), "
        f"{counts[Severity.WARNING]} warning(s), {counts[Severity.INFO]} info)"
    )


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
