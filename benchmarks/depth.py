"""How deep a model a scan handles: its wall time and peak memory against plain forward/backward passes of the
same model, side by side, up to 100,000 layers (issue 21: a 40,000-layer model used to end the scan in a
segfault).

    python benchmarks/depth.py [--quick] [--write-results]

The models: ``nn.Sequential`` of DEPTH blocks ``Linear(4, 4), ReLU()``, scanned as ``gradcheck scan`` scans a
model file (inputs inferred from the first layer, the default loss, 3 passes, skip connections read off the
autograd graph), and the ``gradcheck demo --depth DEPTH --width 4 --no-fix`` preset (sigmoid, batch 64, a
10-way head). Plain: 3 passes of forward, the same loss on the same batches, and backward, ``.grad`` set to
None before each, as training without gradcheck runs them.

Each measurement runs in a fresh process that builds the model, resets its peak RSS to the current RSS, then
does the work: time and the peak's rise are the work's own (run.py's Memory section says why ``VmHWM`` rather
than ``ru_maxrss``). A process that dies (a crash, the memory running out) is reported as such, not as a time.
Ratios are scan over plain of the same model; absolute figures are context. Tables go to stdout, progress to
stderr; ``--write-results`` also puts the table into RESULTS.md as its Depth section.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import RESULTS, machine, megabytes, note, peak_rss, reset_peak_rss, seconds_text, table  # noqa: E402

PASSES = 3
WIDTH = 4
# (model, depth): the MLP at three depths, the demo preset at the depth that used to crash, and at its own width
# (256) where the weights, not the modules, take the memory: what a layer costs there sets how deep it can go.
CASES = [("mlp", 10_000), ("mlp", 40_000), ("mlp", 100_000), ("demo", 40_000), ("demo-256", 2_000)]
QUICK_CASES = [("mlp", 10_000), ("mlp", 40_000)]
LABELS = {"mlp": "Linear(4, 4) + ReLU", "demo": "demo preset, --width 4", "demo-256": "demo preset, width 256"}
CHILD_TIMEOUT = 900  # seconds: one measurement that takes longer is reported as such


def measure(kind: str, model_name: str, depth: int) -> None:
    """The child's side: build, reset the peak, run ``kind`` (plain or scan), print the figures as JSON."""
    import gc

    import torch
    from torch import nn

    from gradcheck_cli.common.options import InputOptions, ScanOptions
    from gradcheck_cli.examine.check_model import check_model
    from gradcheck_cli.load.inputs import plan_inputs
    from gradcheck_cli.load.objective import Objective
    from gradcheck_cli.scan.scan import scan_model
    from gradcheck_cli.trials.presets import DemoSpec, build_preset

    torch.manual_seed(0)
    if model_name == "mlp":
        blocks = []
        for _ in range(depth):
            blocks += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
        model = nn.Sequential(*blocks)
        plan = plan_inputs(model, {}, InputOptions())
        make_batch, loss_fn = plan.make_batch, Objective(model, None, {})

        def scan():
            return scan_model(model, ScanOptions(passes=PASSES))
    else:
        preset = build_preset(DemoSpec(depth=depth, width=WIDTH if model_name == "demo" else 256))
        model, make_batch, loss_fn = preset.model, preset.make_batch, preset.loss

        def scan():
            return check_model(model, make_batch, loss_fn, passes=PASSES, structure=preset.structure)

    def plain():
        model.train()
        for index in range(PASSES):
            model.zero_grad(set_to_none=True)
            batch = make_batch(index)
            loss_fn(model(*batch.args, **batch.kwargs), batch).backward()

    gc.collect()
    setup = reset_peak_rss()
    started = time.perf_counter()
    report = plain() if kind == "plain" else scan()
    seconds = time.perf_counter() - started
    figures = {"seconds": seconds, "setup_kb": setup, "peak_kb": peak_rss()}
    if report is not None:
        figures["verdict"] = report.diagnosis.verdict.value
    print(json.dumps(figures))


def in_child(kind: str, model_name: str, depth: int) -> dict:
    """One measurement in a fresh process; {"died": why} where it did not finish."""
    command = [sys.executable, __file__, "--measure", kind, model_name, str(depth)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return {"died": f"over {CHILD_TIMEOUT} s"}
    if done.returncode != 0:
        if done.returncode < 0:
            return {"died": f"killed by {signal.Signals(-done.returncode).name}"}
        last = (done.stderr.strip().splitlines() or [""])[-1]
        return {"died": f"exit {done.returncode}: {last[:80]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    rows = []
    for model_name, depth in QUICK_CASES if quick else CASES:
        row = {"model": model_name, "depth": depth}
        for kind in ("plain", "scan"):
            note(f"depth: {LABELS[model_name]} x {depth:,}, {kind}")
            row[kind] = in_child(kind, model_name, depth)
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = []
    for row in rows:
        plain, scan = row["plain"], row["scan"]

        def shown(figures: dict, key: str) -> str:
            if "died" in figures:
                return figures["died"]
            value = figures[key]
            return seconds_text(value) if key == "seconds" else megabytes(value)

        both = "died" not in plain and "died" not in scan
        rise = {kind: row[kind]["peak_kb"] - row[kind]["setup_kb"] for kind in ("plain", "scan")} if both else {}
        lines.append(
            [f"{LABELS[row['model']]} x {row['depth']:,}", scan.get("verdict", "-"), shown(plain, "seconds"),
             shown(scan, "seconds"), f"{scan['seconds'] / plain['seconds']:.2f}" if both else "-",
             shown(plain, "setup_kb"), shown(plain, "peak_kb"), shown(scan, "peak_kb"),
             f"{scan['peak_kb'] / plain['peak_kb']:.2f}" if both else "-",
             f"{megabytes(rise['plain'])} / {megabytes(rise['scan'])}" if both else "-"]
        )  # fmt: skip
    header = ["model", "verdict", f"plain, {PASSES} passes", "scan", "scan / plain time", "after set-up",
              "plain peak", "scan peak", "scan / plain peak", "rise: plain / scan"]  # fmt: skip
    return (
        "## Depth\n\n"
        f"Deep models scanned as `gradcheck scan` scans them, against {PASSES} plain forward/backward passes of the "
        "same model on the same batches; each measurement in a fresh process (`benchmarks/depth.py`), its peak "
        "RSS reset once the model is built (after set-up: the RSS then; at width 4 mostly the 2 modules a layer, "
        "at width 256 the weights). A scan that dies says how.\n\n" + table(header, lines) + slope(rows)
    )


def slope(rows: list[dict]) -> str:
    """What a layer of the MLP costs at the peak, from its two deepest rows (fixed costs cancel), and how deep a
    scan of it this machine's memory holds at that rate."""
    done = [r for r in rows if r["model"] == "mlp" and "died" not in r["plain"] and "died" not in r["scan"]]
    if len(done) < 2:
        return ""
    low, high = done[-2], done[-1]
    per_layer = {
        kind: (high[kind]["peak_kb"] - low[kind]["peak_kb"]) / (high["depth"] - low["depth"])
        for kind in ("plain", "scan")
    }
    memory_kb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024
    return (
        f"\n\nFrom {low['depth']:,} to {high['depth']:,} blocks the peak grows by {per_layer['scan']:.1f} KiB a block "
        f"in a scan and {per_layer['plain']:.1f} KiB in plain passes: at that rate this machine's "
        f"{memory_kb / 2**20:.0f} GiB hold a scan of about {memory_kb / per_layer['scan'] / 1e6:.1f} million blocks."
    )


def write_section(section: str) -> None:
    """Put ``section`` into RESULTS.md in place of its Depth section, or at its end."""
    text = RESULTS.read_text() if RESULTS.exists() else "# gradcheck benchmarks\n"
    start = text.find("## Depth\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + ("\n" + text[end:] if end >= 0 else "\n")
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="depths 10,000 and 40,000 only, no demo preset")
    parser.add_argument("--write-results", action="store_true", help=f"also write the table into {RESULTS.name}")
    parser.add_argument("--measure", nargs=3, metavar=("KIND", "MODEL", "DEPTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        kind, model_name, depth = args.measure
        measure(kind, model_name, int(depth))
        return 0
    started = time.perf_counter()
    host = machine()
    section = markdown(run(args.quick))
    command = " ".join(["python benchmarks/depth.py", *(argv if argv is not None else sys.argv[1:])])
    section += f"\n\n{host}; `{command}` · {time.perf_counter() - started:.0f} s"
    print(section)
    if args.write_results:
        write_section(section)
        note(f"wrote the Depth section of {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
