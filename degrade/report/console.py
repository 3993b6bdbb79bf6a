"""Console report (rich): the verdict, the loss budget, the findings that decide it (errors, then
warnings, in full), the ladder, the rest by layer (info folded to one line unless verbose), the
skipped checks one line each, the checks' tally with the command's wall time.

Every user-provided string goes in as rich Text, never as markup, so a message holding "[bold]"
or "[/]" prints literally instead of restyling the report or crashing it. render() writes only to
the console it is given: the CLI passes none for `--format console` (stdout) and never calls it for
the other formats, whose output must be the only thing on stdout.
"""
from __future__ import annotations

from collections import Counter

from rich import box
from rich.console import Console, Group
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from degrade.calibration import MEANING
from degrade.layers import WALK, Layer

STATUS_STYLE = {"degraded": "bold red", "clean": "green", "inconclusive": "yellow", "skipped": "dim"}
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
CHECK_STYLE = {"ran": "green", "skipped": "dim", "failed": "bold red"}
# Floor estimates and the tool's own trouble are never a verdict, but their findings are shown.
GROUPS = (*WALK, Layer.FLOOR, Layer.TOOL)


def render(d, console: Console | None = None, verbosity: int = 1) -> None:
    """verbosity 0 (--quiet): the verdict only; 1: info findings folded to one line; 2 (--verbose):
    every finding in full."""
    console = console or Console()
    console.print(_verdict(d))
    if verbosity == 0:
        return
    if (budget := _budget(d)) is not None:
        console.print(budget)
    deciding = [f for sev in ("error", "warning") for f in d.findings if f.severity.value == sev]
    if deciding:
        console.rule(Text("What to fix first (errors, then warnings)", style="bold"), align="left")
        for f in deciding:
            console.print(_finding(f))
    console.print(_ladder(d))
    for layer in GROUPS:
        rest = [f for f in d.findings if f.layer == layer and f.severity.value == "info"]
        if rest:
            console.rule(Text(layer.value.capitalize(), style="bold"), align="left")
            for f in rest:
                if verbosity > 1:
                    console.print(_finding(f))
                else:
                    console.print(_folded(f), no_wrap=True, overflow="ellipsis")
    for line in _skipped(d):
        console.print(line, no_wrap=True, overflow="ellipsis")
    console.print(_checks(d))


def _verdict(d) -> Panel:
    v = d.verdict
    layer = v.get("layer", "?")
    if d.degraded:
        title, style = f"{layer.upper()} is degraded", "red"
    elif layer == "none":
        title, style = "No degradation found", "green"
    else:
        title, style = "Inconclusive", "yellow"
    body = Text()
    body.append(title, style=f"bold {style}")
    body.append(f"   confidence {_num(v.get('confidence'))}\n", style="bold")
    body.append(f"({MEANING})\n", style="dim")
    # The ladder's headline opens with "<Layer> is degraded: ", which the title already says.
    body.append(relative(str(v.get("headline", "")).removeprefix(f"{layer.capitalize()} is degraded: ")) + "\n")
    if v.get("next_experiment"):
        body.append("Next experiment: ", style="bold")
        body.append(relative(str(v["next_experiment"])))
    run = Text(f"{relative(str(d.run.get('path', '?')))} ({d.run.get('format', '?')})", style="dim")
    return Panel(Group(body, run), title="degrade verdict", title_align="left", border_style=style)


def _budget(d) -> Table | None:
    """The loss budget (degrade/loss_budget.py): each step's eval loss, its cost and 95% interval."""
    b = d.budget
    if not b:
        return None
    table = Table(title=f"Loss budget ({b['unit']})", title_justify="left", title_style="bold",
                  box=box.SIMPLE, pad_edge=False)
    for col in ("step", "loss", "cost", "95% CI / bounds", "from"):
        table.add_column(col)
    for s in b["steps"]:
        band = s.get("ci") or s.get("interval")  # a floor is bounded, not estimated with a CI
        ci = f"{_num(band[0])}-{_num(band[1])}" if band else "-"
        table.add_row(s["step"], _num(s["loss"]), _num(s.get("cost")) if "cost" in s else "-", ci,
                      s.get("code") or s.get("source", ""))
    for why in b["not_measured"]:
        table.add_row(Text(why.split(":")[0], style="dim"), "", "", "", Text(why.split(": ", 1)[-1], style="dim"))
    return table


def _ladder(d) -> Table:
    table = Table(title="The ladder, walked outside-in", title_justify="left", title_style="bold",
                  box=box.SIMPLE, pad_edge=False)
    table.add_column("layer")
    table.add_column("status")
    table.add_column("findings / reason", overflow="fold")
    for layer in WALK:
        rep = d.layers.get(layer)
        if rep is None:
            table.add_row(layer.value, Text("not run", style="dim"), "")
            continue
        mark = "  <- verdict" if d.verdict.get("layer") == layer.value else ""
        detail = ", ".join(f.code for f in rep.findings) or rep.reason or "-"
        if rep.findings and rep.reason:
            detail += f" ({rep.reason})"
        table.add_row(layer.value, Text(rep.status + mark, style=STATUS_STYLE.get(rep.status, "")),
                      Text(detail))
    return table


def _finding(f) -> Group:
    head = Text("  ")
    head.append(f.code, style="bold")
    head.append(f" {f.name}  ")
    head.append(f.severity.value, style=SEVERITY_STYLE.get(f.severity.value, ""))
    head.append(f"  confidence {_num(f.confidence)}", style="dim")
    if f.provisional:
        head.append("  provisional", style="italic magenta")
    body = [Text(relative(f.message))]
    from degrade.finding_cost import cost_text
    if f.severity.value != "info" and (cost := cost_text(f.cost)):
        body.append(Text("cost: ", style="bold").append(cost, style="not bold"))
    if f.fix:
        body.append(Text("fix: ", style="bold").append(relative(f.fix), style="not bold"))
    if f.next_experiment:
        body.append(Text("next: ", style="bold").append(relative(f.next_experiment), style="not bold"))
    return Group(head, Padding(Group(*body), (0, 0, 0, 4)))  # wrapped lines keep the indent


def _folded(f) -> Text:
    """An info finding on one line: nothing to fix, so its first sentence is enough."""
    from degrade.ladder import shortened
    line = Text("  ")
    line.append(f.code, style="bold")
    line.append(f" {f.name}  ", style="dim")
    line.append(shortened(f.message, 110), style="dim")
    return line


def _skipped(d) -> list[Text]:
    """One line per reason with the checks it held back (cut to the terminal's width)."""
    groups = d.skipped_by_reason()
    if not groups:
        return []
    n = sum(len(codes) for _, codes in groups)
    def named(codes: list[str]) -> str:
        return " ".join(codes) if len(codes) <= 4 else " ".join(codes[:3]) + f" +{len(codes) - 3}"
    return [Text(f"\nskipped ({n}):", style="bold")] + [
        Text(f"  {named(codes)}: ", style="dim").append(relative(reason), style="dim")
        for reason, codes in groups]


def relative(text: str) -> str:
    """Paths under the working directory written relative to it (shorter, and what the user typed)."""
    import os
    cwd = os.getcwd().rstrip("/") + "/"
    return text.replace(cwd, "") if cwd != "/" else text


def _checks(d) -> Group:
    counts = Counter(r.status for r in d.checks)
    line = Text("\nchecks: ", style="bold")
    line.append(", ".join(f"{counts[s]} {s}" for s in ("ran", "skipped", "failed")))
    line.append(f"   total {_seconds(d.total_seconds)}", style="dim")
    failed = [Text(f"  {r.code} {r.name} failed: ", style="red").append(relative(r.reason), style="not bold")
              for r in d.checks if r.status == "failed"]
    return Group(line, *failed)


def _num(x) -> str:
    try:
        return f"{float(x):.2f}"
    except (TypeError, ValueError):
        return "?"


def _seconds(s: float) -> str:
    return f"{s:.2f} s" if s < 60 else f"{int(s // 60)} min {s % 60:.0f} s"
