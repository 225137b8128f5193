"""``--format junit``: JUnit XML for test dashboards. One test suite per target; its test cases are the
checks, the same fixed list on every run (so a dashboard tracks each check's history), plus ``verdict``.

A check fails when a finding of its kind is at or above ``--fail-on``; findings below it are written to the
case's ``<system-out>``, so the report loses nothing and the dashboard stays green.

Names are kept whole, with their control characters shown as escapes (render/names.py): XML 1.0 allows
almost none of them, even escaped, and a dashboard shows the text as it is.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import TextIO

from gradcheck_cli.common.choices import FailOn, FindingKind, Severity
from gradcheck_cli.judge.diagnosis import Finding
from gradcheck_cli.render.github import summary as github_summary
from gradcheck_cli.render.interface import RenderOptions
from gradcheck_cli.render.names import Names, shown
from gradcheck_cli.report.report import Report

# Every check a target is tested for, in a fixed order. zero_init is not a check: it is an info finding
# (a layer blocking the gradient on purpose) and goes to the verdict case's output, as would a kind added
# later and not listed here (it still fails the verdict case when at or above --fail-on).
CHECKS = [
    FindingKind.VANISHING_GRADIENT,
    FindingKind.EXPLODING_GRADIENT,
    FindingKind.NORMALIZED_GROWTH,  # a note, or a warning past 10^2
    FindingKind.VANISHING_ACTIVATION,
    FindingKind.EXPLODING_ACTIVATION,
    FindingKind.LARGE_RELATIVE_GRADIENT,
    FindingKind.ZERO_GRADIENT,
    FindingKind.NONFINITE,
    FindingKind.VANISHING_THROUGH_TIME,
    FindingKind.EXPLODING_THROUGH_TIME,
    FindingKind.BASELINE_REGRESSION,  # skipped when no baseline was compared (--baseline)
    FindingKind.FP16_RANGE,  # skipped without --amp
]
VERDICT_CASE = "verdict"
# XML 1.0 forbids most control characters even when escaped: what names.py leaves (a lone surrogate, U+FFFE)
# must never make the file unreadable either.
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
    name = shown(report.target or report.title, None)
    names = Names.of(report, limit=None)
    suite = ET.Element("testsuite", name=_clean(name))
    properties = ET.SubElement(suite, "properties")
    title = shown(report.title, None)
    for key, value in (("title", title), ("verdict", report.verdict.value), ("fail_on", fail_on.value)):
        ET.SubElement(properties, "property", name=key, value=_clean(value))
    classname = _clean(f"gradcheck.{name}")
    cases = [_check(suite, classname, kind, report, fail_on, names) for kind in CHECKS]
    cases.append(_verdict(suite, classname, report, fail_on, names))
    _set_counts(suite, cases, seconds=report.result.seconds)
    return suite


def _check(
    suite: ET.Element, classname: str, kind: FindingKind, report: Report, fail_on: FailOn, names: Names
) -> ET.Element:
    """One check: failed by its findings at or above fail_on; the ones below go to its output."""
    case = ET.SubElement(suite, "testcase", classname=classname, name=kind.value, time="0")
    if kind is FindingKind.BASELINE_REGRESSION and report.baseline is None:
        ET.SubElement(case, "skipped", message="no baseline compared (--baseline)")
        return case
    if kind is FindingKind.FP16_RANGE and report.result.amp is None:
        ET.SubElement(case, "skipped", message="not measured under mixed precision (--amp)")
        return case
    of_kind = [finding for finding in report.diagnosis.findings if finding.kind is kind]
    failing = [finding for finding in of_kind if _fails(finding, fail_on)]
    if failing:
        first = names.prose(failing[0].message)
        message = first if len(failing) == 1 else f"{len(failing)} findings: {first}"
        failure = ET.SubElement(case, "failure", message=_clean(message), type=kind.value)
        failure.text = _clean("\n\n".join(_body(finding, names) for finding in failing))
    passing = [finding for finding in of_kind if not _fails(finding, fail_on)]
    if passing:
        ET.SubElement(case, "system-out").text = _clean("\n\n".join(_body(finding, names) for finding in passing))
    return case


def _verdict(suite: ET.Element, classname: str, report: Report, fail_on: FailOn, names: Names) -> ET.Element:
    """Fails when the report fails (the CLI's exit code 1); carries the findings no check covers."""
    # The measurement's time goes on this case, so the cases' times add up to the suite's.
    case = ET.SubElement(suite, "testcase", classname=classname, name=VERDICT_CASE, time=f"{report.result.seconds:.3f}")
    summary = github_summary(report)
    unchecked = [finding for finding in report.diagnosis.findings if finding.kind not in CHECKS]
    if report.fails(fail_on):
        body = [summary, *(_body(finding, names) for finding in unchecked if _fails(finding, fail_on))]
        failure = ET.SubElement(case, "failure", message=_clean(summary), type=VERDICT_CASE)
        failure.text = _clean("\n\n".join(body))
        output = [_body(finding, names) for finding in unchecked if not _fails(finding, fail_on)]
    else:
        output = [summary, *(_body(finding, names) for finding in unchecked)]
    if output:
        ET.SubElement(case, "system-out").text = _clean("\n\n".join(output))
    return case


def _set_counts(element: ET.Element, children: list[ET.Element], seconds: float) -> None:
    """The counts from the cases (or, for <testsuites>, the suites) themselves, so they cannot disagree."""
    if element.tag == "testsuites":
        counts = {
            what: sum(int(child.get(what, "0")) for child in children) for what in ("tests", "failures", "skipped")
        }
    else:
        counts = {
            "tests": len(children),
            "failures": sum(child.find("failure") is not None for child in children),
            "skipped": sum(child.find("skipped") is not None for child in children),
        }
    for what, count in {**counts, "errors": 0}.items():
        element.set(what, str(count))
    element.set("time", f"{seconds:.3f}")


def _fails(finding: Finding, fail_on: FailOn) -> bool:
    return fail_on is not FailOn.NEVER and finding.severity.rank >= Severity(fail_on.value).rank


def _body(finding: Finding, names: Names) -> str:
    """The message, the layers, the causes and the first fix with its code."""
    lines = [f"{finding.severity.value} {finding.kind.value}: {names.prose(finding.message)}"]
    if finding.layers:
        lines.append(f"layers ({len(finding.layers)}): {', '.join(shown(name, None) for name in finding.layers)}")
    lines += [f"cause [{cause.id.value}]: {names.prose(cause.summary)}" for cause in finding.causes]
    if finding.fixes:
        fix = finding.fixes[0]
        lines += [
            f"fix [{fix.id}]: {names.prose(fix.title)}",
            names.prose(fix.detail),
            "",
            names.code(fix.code).rstrip(),
        ]
    return "\n".join(lines)


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
