"""Scan the whole zoo as the tests do and write tests/zoo/BASELINE.md: per architecture, today's verdict,
decades, top finding and seconds, beside the verdict expected (issue 22).

    PYTHONPATH=.venv/zoo-packages .venv/bin/python tests/zoo/measure.py [NAME ...] [--threads N] [--print]

(``make test-zoo`` installs the zoo's packages in .venv/zoo-packages.) The tests do not need this script.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the model files import tests.zoo, as under pytest

import torch  # noqa: E402

from gradcheck_cli.common.errors import GradcheckError  # noqa: E402
from tests.zoo.catalogue import ARCHITECTURES, Check  # noqa: E402
from tests.zoo.scanning import alarms, scan_architecture, top_finding  # noqa: E402
from tests.zoo.variants import INVARIANCE  # noqa: E402

BASELINE = Path(__file__).with_name("BASELINE.md")


def first_line(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}"[:240].replace("|", "\\|")


def scan_row(folder: Path, name: str, *, variant: str | None = None, example_inputs: bool = True) -> dict:
    start = time.perf_counter()
    try:
        scan = scan_architecture(folder, name, variant=variant, example_inputs=example_inputs)
    except GradcheckError as error:
        return {"outcome": "exit 2", "detail": first_line(error), "seconds": time.perf_counter() - start}
    except Exception as error:  # a crash inside gradcheck: a traceback, not a verdict
        traceback.print_exc()
        return {"outcome": "crash", "detail": first_line(error), "seconds": time.perf_counter() - start}
    report = scan.report
    profile = report.diagnosis.profile
    trend = f"{profile.layer_type} ({len(profile.layers)} layers)" if profile.layers else "-"
    return {
        "outcome": report.verdict.value.upper(),
        "decades": profile.decades,
        "top": top_finding(report),
        "alarms": ", ".join(alarms(report)) or "-",
        "trend": trend,
        "exit": 1 if report.fails() else 0,
        "inputs": dict(report.context).get("inputs", "-").replace("|", "\\|"),
        "seconds": scan.seconds,
    }


def decades(row: dict) -> str:
    value = row.get("decades")
    return "-" if value is None else f"{value:+.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="architectures to scan (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the tests use 1)")
    parser.add_argument("--print", action="store_true", help="print the table instead of writing BASELINE.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["GRADCHECK_INLINE_WORKER"] = "1"  # as in the tests: the scan runs in this process
    names = args.names or list(ARCHITECTURES)
    started = time.perf_counter()
    rows, inference, invariance = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for name in names:
            architecture = ARCHITECTURES[name]
            reason = architecture.unavailable()
            if reason:
                rows.append((architecture, {"outcome": "skipped", "detail": reason, "seconds": 0.0}))
                continue
            row = scan_row(folder, name)
            rows.append((architecture, row))
            print(f"{name}: {row}", file=sys.stderr, flush=True)
            if architecture.check_inference:
                inferred = scan_row(folder, name, example_inputs=False)
                inference.append((architecture, inferred))
                print(f"{name} (inputs inferred): {inferred}", file=sys.stderr, flush=True)
            for variant in INVARIANCE.get(name, {}):
                varied = scan_row(folder, name, variant=variant)
                invariance.append((architecture, variant, row, varied))
                print(f"{name} {variant}: {varied}", file=sys.stderr, flush=True)
    total = time.perf_counter() - started
    text = render(rows, inference, invariance, total, args.threads)
    if args.print or args.names:
        print(text)
    else:
        BASELINE.write_text(text)
        print(f"wrote {BASELINE.relative_to(ROOT)} ({total:.0f} s)")


def render(rows, inference, invariance, total: float, threads: int) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()

    commit = git("log", "-1", "--format=%h")
    if git("status", "--porcelain", "--", "gradcheck_cli"):
        commit += " with uncommitted changes to gradcheck_cli/"
    versions = []
    for package in ("torch", "torchvision", "timm", "transformers"):
        try:
            versions.append(f"{package} {__import__(package).__version__}")
        except ImportError:
            versions.append(f"{package} missing")
    lines = [
        "# The zoo at today's gradcheck (issue 22)",
        "",
        "Generated by `tests/zoo/measure.py` (not by the tests): each architecture of `tests/zoo/catalogue.py`",
        "scanned as `gradcheck scan FILE` with no flags, the file building the model with random init and",
        "defining `example_inputs()`. `expected` is what issue 22 asks for; a row whose verdict or alarms",
        "differ is marked `xfail(strict=True)` in `tests/test_zoo.py` with its cause.",
        "",
        f"Measured on {platform.machine()}, {os.cpu_count()} cores, {threads} torch thread(s), "
        f"{', '.join(versions)}; gradcheck at {commit}. Total {total:.0f} s; the seconds of the first model",
        "of each package include importing it.",
        "",
        "| family | architecture | expected | today | decades | trend over | top finding | alarms | exit | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for architecture, row in rows:
        if "detail" in row:
            today = f"{row['outcome']}: {row['detail']}"
            cells = [today, "-", "-", "-", "-", "-"]
        else:
            cells = [row["outcome"], decades(row), row["trend"], row["top"], row["alarms"], str(row["exit"])]
        lines.append(
            f"| {architecture.family.value} | {architecture.name} | {architecture.expected.value} | "
            + " | ".join(cells)
            + f" | {row['seconds']:.1f} |"
        )
    lines += [
        "",
        f"## {Check.INFERS_INPUTS.value.capitalize()}: the same models scanned without `example_inputs()`",
        "",
        "| architecture | today | inputs | s |",
        "|---|---|---|---|",
    ]
    for architecture, row in inference:
        today = f"{row['outcome']}: {row['detail']}" if "detail" in row else f"{row['outcome']} {decades(row)}"
        lines.append(f"| {architecture.name} | {today} | {row.get('inputs', '-')} | {row['seconds']:.1f} |")
    lines += [
        "",
        "## Invariance: the same weights renamed, re-nested or flattened (verdict and decades within 0.1)",
        "",
        "| architecture | variant | as built | variant's | top finding | s |",
        "|---|---|---|---|---|---|",
    ]
    for architecture, variant, built, row in invariance:
        shown = f"{row['outcome']}: {row['detail']}" if "detail" in row else f"{row['outcome']} {decades(row)}"
        lines.append(
            f"| {architecture.name} | {variant} | {built['outcome']} {decades(built)} | {shown} | "
            f"{row.get('top', '-')} | {row['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
