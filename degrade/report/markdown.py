"""GitHub markdown report: for a PR comment, a CI job summary or a notebook.

Every user-provided string passes through _esc(): a pipe or a newline in a message would
otherwise break the table it sits in, and markdown or HTML characters would restyle the report.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from degrade.calibration import MEANING
from degrade.layers import WALK, Layer

STATUS_ICON = {"degraded": "🔴", "clean": "🟢", "inconclusive": "🟡", "skipped": "⚪"}
GROUPS = (*WALK, Layer.FLOOR, Layer.TOOL)  # floor and tool findings are shown, never a verdict
MAX_ITEMS = 6  # evidence lists and dicts longer than this are cut, with a count of the rest
MAX_CHARS = 120  # evidence strings longer than this are cut


def _budget(b: dict | None) -> list[str]:
    """The loss budget (degrade/loss_budget.py) as a table, then what was not measured."""
    if not b:
        return []
    out = ["", f"## Loss budget ({_esc(b['unit'])})", "", "| Step | Loss | Cost | 95% CI / bounds | From |", "|---|---|---|---|---|"]
    for s in b["steps"]:
        band = s.get("ci") or s.get("interval")  # a floor is bounded, not estimated with a CI
        ci = f"{_num(band[0])}-{_num(band[1])}" if band else "—"
        out.append(f"| {s['step']} | {_num(s['loss'])} | {_num(s['cost']) if 'cost' in s else '—'} | {ci} "
                   f"| {_esc(s.get('code') or s.get('source', ''))} |")
    return out + [""] + [f"- not measured: {_esc(m)}" for m in b["not_measured"]]


def render(d) -> str:
    out = ["# degrade diagnosis", ""]
    out += _verdict(d)
    out += _budget(d.budget)
    out += ["", "## Ladder", "", "| Layer | Status | Findings / reason |", "|---|---|---|"]
    for layer in WALK:
        rep = d.layers.get(layer)
        if rep is None:
            out.append(f"| {layer.value} | not run | |")
            continue
        mark = " **← verdict**" if d.verdict.get("layer") == layer.value else ""
        detail = ", ".join(f"`{_esc(f.code)}`" for f in rep.findings)
        if rep.reason:
            detail = f"{detail} ({_esc(rep.reason)})" if detail else _esc(rep.reason)
        out.append(f"| {layer.value} | {STATUS_ICON.get(rep.status, '')} {_esc(rep.status)}{mark} "
                   f"| {detail or '—'} |")
    out += ["", "## Findings", ""]
    if not d.findings:
        out += ["No findings.", ""]
    for layer in GROUPS:
        findings = [f for f in d.findings if f.layer == layer]
        if findings:
            out += [f"### {layer.value.capitalize()}", ""]
            for f in findings:
                out += _finding(f) + [""]
    out += ["## Checks", ""] + _checks(d)
    return "\n".join(out) + "\n"


def _verdict(d) -> list[str]:
    v = d.verdict
    if d.degraded:
        title = f"{_esc(v.get('layer', ''))} is degraded"
    else:
        title = "no degradation found" if v.get("layer") == "none" else "inconclusive"
    lines = [f"**Verdict: {title}** (confidence {_num(v.get('confidence'))})", "", f"_{MEANING}_", "",
             f"> {_esc(_headline(v))}", ""]
    if v.get("next_experiment"):
        lines += [f"**Next experiment:** {_esc(v['next_experiment'])}", ""]
    lines.append(f"Run: `{_code(d.run.get('path', '?'))}` ({_esc(d.run.get('format', '?'))})")
    return lines


def _headline(v: dict) -> str:
    # The ladder's headline opens with "<Layer> is degraded: ", which the verdict line already says.
    return str(v.get("headline", "")).removeprefix(f"{str(v.get('layer', '')).capitalize()} is degraded: ")


def _finding(f) -> list[str]:
    tags = f"{f.severity.value}, confidence {_num(f.confidence)}"
    if f.provisional:
        tags += ", *provisional*"
    lines = [f"#### `{_code(f.code)}` {_esc(f.name)} ({tags})", "", _esc(f.message), ""]
    from degrade.finding_cost import cost_text
    if f.severity.value != "info" and (cost := cost_text(f.cost)):
        lines.append(f"- **Cost:** {_esc(cost)}")
    if f.fix:
        lines.append(f"- **Fix:** {_esc(f.fix)}")
    if f.next_experiment:
        lines.append(f"- **Next experiment:** {_esc(f.next_experiment)}")
    if f.evidence:
        items = " · ".join(f"{_esc(k)}: {_esc(_compact(v))}" for k, v in f.evidence.items())
        lines.append(f"- **Evidence:** {items}")
    return lines


def _checks(d) -> list[str]:
    counts = Counter(r.status for r in d.checks)
    lines = [", ".join(f"{counts[s]} {s}" for s in ("ran", "skipped", "failed"))
             + f"; total {d.total_seconds:.2f} s", ""]
    if d.checks:
        lines += ["| Check | Layer | Status | Seconds | Reason |", "|---|---|---|---:|---|"]
        for r in sorted(d.checks, key=lambda r: (_rank(r.layer), r.code)):  # walk order
            lines.append(f"| `{_code(r.code)}` {_esc(r.name)} | {r.layer.value} | {r.status} "
                         f"| {r.seconds:.2f} | {_esc(r.reason)} |")
    return lines


def _rank(layer: Layer) -> int:
    return GROUPS.index(layer) if layer in GROUPS else len(GROUPS)


def _compact(v: Any, depth: int = 0) -> str:
    """Evidence as one short line: numbers to 4 significant digits, long lists and dicts cut."""
    if hasattr(v, "tolist") and not isinstance(v, (list, tuple, dict)):
        v = v.tolist()  # numpy (or torch) arrays and scalars, as plain Python values
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        if depth > 1:
            return "{…}"
        items = [f"{k}: {_compact(x, depth + 1)}" for k, x in list(v.items())[:MAX_ITEMS]]
        return "{" + ", ".join(items) + _more(len(v)) + "}"
    if isinstance(v, (list, tuple)):
        if depth > 1:
            return "[…]"
        items = [_compact(x, depth + 1) for x in list(v)[:MAX_ITEMS]]
        return "[" + ", ".join(items) + _more(len(v)) + "]"
    text = str(v)
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + "…"


def _more(n: int) -> str:
    return f", … (+{n - MAX_ITEMS})" if n > MAX_ITEMS else ""


def _esc(text: Any) -> str:
    """Safe inside a table cell or a paragraph: no HTML, no markdown syntax, one line."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "\\`*_[]|#~":
        text = text.replace(ch, "\\" + ch)
    return text.replace("\r\n", "\n").replace("\n", "<br>")


def _code(text: Any) -> str:
    """Inside a `code span` nothing is interpreted, except a backtick and a pipe in a table."""
    return str(text).replace("`", "'").replace("|", "¦").replace("\n", " ")


def _num(x: Any) -> str:
    try:
        return f"{float(x):.2f}"
    except (TypeError, ValueError):
        return "?"
