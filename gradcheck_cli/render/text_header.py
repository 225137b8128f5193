"""The lines that open a Rich report: the title, the model's facts, the context (what was measured and how)
and the verdict with its depth and through-time trends."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text

from gradcheck_cli.render.names import LINE_CHARS, shown
from gradcheck_cli.render.text_style import VERDICT_STYLE
from gradcheck_cli.report.report import Report


def header(report: Report, heading: str | None) -> Group:
    result, diagnosis = report.result, report.diagnosis
    title = Text()
    title.append("gradcheck", style="bold")
    if heading:
        title.append(f" ({heading})", style="cyan")
    title.append(f"  {shown(report.title, LINE_CHARS)}")
    facts = Text(
        f"{result.param_count:,} parameters ({result.trainable_param_count:,} trainable) · "
        f"{len(result.layers)} layers · batch {result.batch_size} · {result.passes} pass{'es' if result.passes != 1 else ''} · seed {result.seed} · "
        f"{result.dtype} on {result.device} · {result.seconds:.2f} s",
        style="dim",
    )
    context = [
        Text.assemble((f"{shown(what)}: ", "bold dim"), (shown(how, LINE_CHARS), "dim")) for what, how in report.context
    ]
    verdict = Text("Verdict: ")
    verdict.append(diagnosis.verdict.value.upper(), style=VERDICT_STYLE[diagnosis.verdict])
    profile = diagnosis.profile
    if profile.decades is not None:
        verdict.append(f"   input/output backward signal 10^{profile.decades:+.1f}")
    if profile.gain_per_layer is not None:
        verdict.append(f" · gain x{profile.gain_per_layer:.3g}/layer")
    if profile.forward_decades is not None:
        verdict.append(f" · forward 10^{profile.forward_decades:+.1f}")
    for series in diagnosis.time_profiles:
        verdict.append(
            f"   {shown(series.name)}: first/last step 10^{series.decades:+.1f}, x{series.gain_per_step:.3g}/step"
        )
    return Group(title, facts, *context, verdict)
