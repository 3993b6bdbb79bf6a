"""The loss budget drawn as a waterfall for the HTML report (degrade/loss_budget.py).

One row per step: a bar from 0 to the step's eval loss on a shared scale, the step's cost (the
change from the step before) and its 95% interval as a whisker; then the steps no check could
measure, one line each. Plain HTML and CSS: no script, nothing to fetch.
"""
from __future__ import annotations

from html import escape

CSS = """
.budget{margin:18px 0}.budget h2{font-size:16px;margin:0 0 8px}
.budget .row{display:grid;grid-template-columns:110px 1fr 190px;gap:10px;align-items:center;margin:4px 0}
.budget .track{position:relative;height:18px;background:#f2f2f2;border-radius:3px}
.budget .bar{position:absolute;left:0;top:0;bottom:0;background:#8aa9d6;border-radius:3px}
.budget .ci{position:absolute;top:7px;height:4px;background:#333}
.budget .note{font-size:12px;color:#666}.budget .unmeasured{font-size:12px;color:#888;margin:2px 0}
"""


def _e(x) -> str:
    return escape(str(x), quote=True)


def _fmt(x) -> str:
    return "-" if x is None else f"{float(x):.4g}"


def render(budget: dict | None) -> str:
    if not budget or not budget.get("steps"):
        return ""
    steps = budget["steps"]
    top = max([float(s["loss"]) for s in steps] + [float((s.get("ci") or s.get("interval"))[1])
                                                   for s in steps if s.get("ci") or s.get("interval")] + [1e-12])
    rows = []
    for s in steps:
        width = 100.0 * max(float(s["loss"]), 0.0) / top
        ci = ""
        band = s.get("ci") or s.get("interval")  # a floor is bounded, not estimated with a CI
        if band:
            lo, hi = (100.0 * max(float(v), 0.0) / top for v in band)
            ci = f'<i class="ci" style="left:{lo:.1f}%;width:{max(hi - lo, 0.3):.1f}%"></i>'
        cost = f"cost {_fmt(s['cost'])}" if "cost" in s else ("bounds" if s.get("interval") else "start")
        if s.get("ci"):
            cost += f" (95% CI of the loss {_fmt(s['ci'][0])}-{_fmt(s['ci'][1])})"
        elif s.get("interval"):
            cost += f" {_fmt(s['interval'][0])}-{_fmt(s['interval'][1])}"
        source = s.get("code") or ""
        if s.get("source"):
            source = f"{source}: {s['source']}" if source else s["source"]
        rows.append(f'<div class="row"><b>{_e(s["step"])}</b><div class="track">'
                    f'<i class="bar" style="width:{width:.1f}%"></i>{ci}</div>'
                    f'<span>{_e(_fmt(s["loss"]))} <span class="note">{_e(cost)}</span></span></div>'
                    f'<div class="note" style="margin-left:120px">{_e(source)}</div>')
    missing = "".join(f'<p class="unmeasured">{_e(m)}</p>' for m in budget.get("not_measured", []))
    return (f'<style>{CSS}</style><section class="budget"><h2>Loss budget '
            f'<span class="note">({_e(budget.get("unit", ""))})</span></h2>{"".join(rows)}{missing}</section>\n')
