"""The HTML report: one self-contained file, readable offline, safe to open from anyone's run.

- Self-contained: inline CSS, inline SVG, no script, no font or stylesheet link, no URL at all,
  so it renders on an air-gapped machine and in a CI artifact viewer alike.
- Safe: every user-provided string (run path, messages, evidence keys and values, reasons,
  curve names) goes through _e() = html.escape; a run dir is untrusted input.
- Small: evidence lists are cut (with a count of the rest) and curves downsampled to ~1000
  points per series, so the file stays well under 2 MB whatever the run logged.
"""
from __future__ import annotations

from collections import Counter
from functools import cache
from html import escape
from importlib.resources import files
from typing import Any

from degrade.calibration import MEANING
from degrade.layers import WALK, Layer
from degrade.report import budget_html
from degrade.report.evidence_pictures import picture
from degrade.report.evidence_table import value as _value
from degrade.report.svg import line_chart

GROUPS = (*WALK, Layer.FLOOR, Layer.TOOL)  # floor and tool findings are shown, never a verdict
LETTER = {Layer.OBSERVATION: "O", Layer.REACHABILITY: "R", Layer.INSTANTIATION: "I",
          Layer.PERCEPTION: "P"}


def _e(text: Any) -> str:
    return escape(str(text), quote=True)


@cache
def css() -> str:
    return files("degrade.report").joinpath("report.css").read_text(encoding="utf-8")


def render(d) -> str:
    """Verdict, loss budget, what to fix first (errors, then warnings), the ladder beside the
    curves, the other findings folded by layer, the skipped checks one line each, the checks."""
    title = f"degrade: {d.verdict.get('layer', '?')}: {d.run.get('path', '')}"
    body = [_header(d), _verdict(d), budget_html.render(d.budget), _fix_first(d),
            '<div class="grid">', _ladder(d), _curves(d), "</div>",
            _findings(d), _skipped(d), _checks(d), _footer(d)]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{css()}</style></head>\n"
            f'<body><main>\n{"".join(body)}\n</main></body></html>\n')


def _header(d) -> str:
    run = d.run
    extra = "".join(f"<span>{_e(k)}: {_e(run[k])}</span>" for k in ("format", "checkpoint", "task")
                    if run.get(k) not in (None, ""))
    return (f'<header><div class="brand">degrade <span>diagnosis</span></div>'
            f'<div class="run"><code>{_e(run.get("path", "?"))}</code>{extra}</div></header>\n')


def _verdict(d) -> str:
    v = d.verdict
    layer = str(v.get("layer", "?"))
    if d.degraded:
        kind, title = "bad", f"{layer.capitalize()} is degraded"
    elif layer == "none":
        kind, title = "ok", "No degradation found"
    else:
        kind, title = "warn", "Inconclusive"
    conf = _float(v.get("confidence"))
    bar = (f'<div class="conf" title="{_e(MEANING)}"><span>confidence {conf:.2f}</span>'
           f'<div class="bar"><i style="width:{max(0.0, min(conf, 1.0)) * 100:.0f}%"></i></div></div>'
           if conf == conf else "")  # NaN check: no bar for an unknown confidence
    nxt = (f'<p class="next"><b>Next experiment</b> {_e(v["next_experiment"])}</p>'
           if v.get("next_experiment") else "")
    return (f'<section class="verdict {kind}"><div class="vhead"><div><div class="label">Verdict</div>'
            f'<h1>{_e(title)}</h1></div>{bar}</div>'
            f'<p class="headline">{_e(_headline(v, title))}</p>{nxt}'
            f'<p class="meaning">{_e(MEANING)}</p></section>\n')


def _headline(v: dict, title: str) -> str:
    # The ladder's headline starts with "<Layer> is degraded: ", which the title already says.
    return str(v.get("headline", "")).removeprefix(f"{title}: ")


def _ladder(d) -> str:
    rungs = []
    ids = _finding_ids(d)
    for layer in WALK:
        rep = d.layers.get(layer)
        status = rep.status if rep else "not run"
        verdict = d.verdict.get("layer") == layer.value
        first = {}  # one link per code, in code order: a check with two findings is named once
        for f in sorted(rep.findings if rep else [], key=lambda f: f.code):
            first.setdefault(f.code, f)
        codes = " ".join(f'<a class="code" href="#{ids[id(f)]}">{_e(f.code)}</a>' if id(f) in ids
                         else f'<span class="code">{_e(f.code)}</span>' for f in first.values())
        reason = f'<div class="reason">{_e(rep.reason)}</div>' if rep and rep.reason else ""
        tag = '<span class="tag verdict-tag">verdict</span>' if verdict else ""
        rungs.append(f'<li class="rung s-{_e(status.replace(" ", "-"))}">'
                     f'<div class="dot">{LETTER[layer]}</div><div class="rbody">'
                     f'<div class="rtitle">{layer.value.capitalize()} {tag}'
                     f'<span class="pill s-{_e(status.replace(" ", "-"))}">{_e(status)}</span></div>'
                     f'<div class="codes">{codes}</div>{reason}</div></li>')
    return (f'<section class="card ladder"><h2>The ladder</h2><p class="muted">Walked outside-in: a '
            f'layer\'s evidence counts once the layers outside it are clean.</p>'
            f'<ol>{"".join(rungs)}</ol></section>\n')


def _curves(d) -> str:
    """The loss curves with R201's projection and the best checkpoint (R202/R212) drawn in, then
    the learning rate and each logged eval metric in a small panel of its own."""
    losses = {k: v for k, v in d.curves.items() if k.endswith(" loss")}
    dashed, band, marks = _projection(d, losses)
    chart = line_chart(losses, dashed=dashed, band=band, marks=marks) if losses else ""
    inner = chart or '<p class="muted">No loss curves were logged for this run.</p>'
    small = [(name, line_chart({name: xy}, width=380, height=210, y_label=name, log_y=False))
             for name, xy in d.curves.items() if not name.endswith(" loss")][:5]
    panels = "".join(f'<div class="panel">{svg}</div>' for _, svg in small if svg)
    return (f'<section class="card curves"><h2>Curves</h2>{inner}'
            f'{f"<div class=panels>{panels}</div>" if panels else ""}</section>\n')


def _projection(d, losses: dict) -> tuple[set, tuple | None, list]:
    """R201's projected continuation (dashed, its range shaded) and the best eval step (R212)."""
    dashed, band, marks = set(), None, []
    by_code = {f.code: f for f in d.findings}
    r201 = by_code.get("R201")
    gain = ((r201.cost or {}).get("loss") if r201 else None)  # None unless the eval curve was fitted
    end, last = (r201.evidence.get("fitted_loss_at_end"), r201.evidence.get("last_step")) if r201 else (None, None)
    if gain is not None and None not in (end, last):
        lo, hi = gain["ci"]
        name = "projection: twice the steps (R201)"
        losses[name] = ([last, 2 * last], [end, end - gain["value"]])
        dashed.add(name)
        band = ([last, 2 * last], [end, end - hi], [end, end - lo])
    best = (by_code["R212"].evidence if "R212" in by_code else {}).get("best_step")
    if best is not None:
        marks.append((best, "best checkpoint"))
    return dashed, band, marks


def _fix_first(d) -> str:
    """The findings that decide the verdict and what to do, in full: errors, then warnings."""
    ids = _finding_ids(d)
    deciding = [f for sev in ("error", "warning") for f in d.findings if f.severity.value == sev]
    if not deciding:
        return ""
    cards = "".join(_finding(f, ids[id(f)]) for f in deciding)
    return f'<section class="findings fixfirst"><h2>What to fix first</h2>{cards}</section>\n'


def _findings(d) -> str:
    """Info findings (nothing to fix), folded by layer: one line each, the card on demand."""
    ids = _finding_ids(d)
    parts = ['<section class="findings"><h2>Everything else the checks measured</h2>']
    rest = [f for f in d.findings if f.severity.value == "info"]
    if not rest:
        parts.append('<p class="muted">Nothing else.</p>')
    for layer in GROUPS:
        mine = [f for f in rest if f.layer == layer]
        if mine:
            lines = "".join(f'<p class="oneline"><span class="code">{_e(f.code)}</span>{_e(_first_sentence(f.message))}</p>'
                            for f in mine)
            cards = "".join(_finding(f, ids[id(f)]) for f in mine)
            parts.append(f'<details class="folded"><summary>{layer.value.capitalize()}: {len(mine)} '
                         f'info finding{"s" if len(mine) > 1 else ""}</summary>{lines}'
                         f'<details><summary>the full cards</summary>{cards}</details></details>')
    parts.append("</section>\n")
    return "".join(parts)


def _first_sentence(text: str) -> str:
    from degrade.ladder import shortened
    return shortened(text, 200)


def _skipped(d) -> str:
    """One line per reason, naming the checks it held back (twenty checks skipped for want of a
    model are one line, not twenty)."""
    groups = d.skipped_by_reason()
    if not groups:
        return ""
    items = "".join(f'<li><span class="code">{_e(" ".join(codes))}</span>{_e(reason)}</li>'
                    for reason, codes in groups)
    n = sum(len(codes) for _, codes in groups)
    return (f'<section class="card"><h2>Skipped checks ({n})</h2>'
            f'<ul class="skipped">{items}</ul></section>\n')



def _finding(f, anchor: str) -> str:
    sev = f.severity.value
    prov = ('<span class="tag prov" title="a layer outside this one is degraded; fixing it may '
            'change this finding">provisional</span>' if f.provisional else "")
    from degrade.finding_cost import cost_text
    rows = "".join(f"<dt>{label}</dt><dd>{_e(text)}</dd>"
                   for label, text in (("Cost", cost_text(f.cost) if sev != "info" else ""), ("Fix", f.fix),
                                       ("Next experiment", f.next_experiment)) if text)
    evidence = ""
    if f.evidence:
        # folded: the message, the fix and the curves say it; the numbers are there to check
        evidence = (f'<details><summary>Evidence</summary>'
                    f'{_value(f.evidence)}</details>')
    pic = picture(f) if sev != "info" else ""  # drawn where there is something to fix
    return (f'<article class="finding sev-{_e(sev)}" id="{anchor}"><div class="fhead">'
            f'<span class="code">{_e(f.code)}</span><span class="fname">{_e(f.name)}</span>'
            f'<span class="pill sev-{_e(sev)}">{_e(sev)}</span>{prov}'
            f'<span class="fconf">confidence {_float(f.confidence):.2f}</span></div>'
            f'<p class="msg">{_e(f.message)}</p><dl>{rows}</dl>'
            f'{f"<div class=pic>{pic}</div>" if pic else ""}{evidence}</article>')


def _checks(d) -> str:
    counts = Counter(r.status for r in d.checks)
    summary = " · ".join(f'<span class="c-{s}">{counts[s]} {s}</span>' if counts[s] else f"0 {s}"
                         for s in ("ran", "skipped", "failed"))
    rows = "".join(f'<tr class="c-{_e(r.status)}"><td><span class="code">{_e(r.code)}</span></td>'
                   f"<td>{_e(r.name)}</td><td>{_e(r.layer.value)}</td>"
                   f'<td><span class="pill c-{_e(r.status)}">{_e(r.status)}</span></td>'
                   f'<td class="num">{r.seconds:.2f}</td><td>{_e(r.reason)}</td></tr>'
                   for r in sorted(d.checks, key=_walk_order))
    table = ('<table class="checks"><thead><tr><th>Check</th><th>Name</th><th>Layer</th><th>Status</th>'
             f'<th class="num">Seconds</th><th>Reason</th></tr></thead><tbody>{rows}</tbody></table>'
             if d.checks else '<p class="muted">No checks were selected.</p>')
    return (f'<section class="card"><details><summary><h2>Checks</h2><span class="csum">{summary}'
            f"</span></summary>{table}</details></section>\n")


def _footer(d) -> str:
    from degrade import __version__
    from degrade.diagnosis import SCHEMA
    return (f"<footer>degrade {_e(__version__)} · {_e(SCHEMA)} · total {d.total_seconds:.2f} s"
            "</footer>\n")


def _walk_order(r) -> tuple[int, str]:
    return (GROUPS.index(r.layer) if r.layer in GROUPS else len(GROUPS), r.code)


def _finding_ids(d) -> dict[int, str]:
    # Anchors from positions, never from codes: a third-party code is user text.
    return {id(f): f"finding-{i}" for i, f in enumerate(d.findings)}


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")
