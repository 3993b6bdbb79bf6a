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
from html import escape
from typing import Any

from degrade.calibration import MEANING
from degrade.layers import WALK, Layer
from degrade.report import budget_html
from degrade.report.svg import line_chart

GROUPS = (*WALK, Layer.FLOOR, Layer.TOOL)  # floor and tool findings are shown, never a verdict
LETTER = {Layer.OBSERVATION: "O", Layer.REACHABILITY: "R", Layer.INSTANTIATION: "I",
          Layer.PERCEPTION: "P"}
MAX_ITEMS = 20  # evidence list items / table rows shown before "… N more"
MAX_CHARS = 400  # evidence strings are cut after this many characters
MAX_DEPTH = 3  # nested evidence deeper than this is summarised: keeps the file small


def _e(text: Any) -> str:
    return escape(str(text), quote=True)


def render(d) -> str:
    title = f"degrade: {d.verdict.get('layer', '?')}: {d.run.get('path', '')}"
    body = [_header(d), _verdict(d), budget_html.render(d.budget),
            '<div class="grid">', _ladder(d), _curves(d), "</div>",
            _findings(d), _checks(d), _footer(d)]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n"
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
        codes = " ".join(f'<a class="code" href="#{ids[id(f)]}">{_e(f.code)}</a>' if id(f) in ids
                         else f'<span class="code">{_e(f.code)}</span>'
                         for f in (rep.findings if rep else []))
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
    chart = line_chart(d.curves) if d.curves else ""
    inner = chart or '<p class="muted">No loss curves were logged for this run.</p>'
    return f'<section class="card curves"><h2>Loss curves</h2>{inner}</section>\n'


def _findings(d) -> str:
    ids = _finding_ids(d)
    parts = ['<section class="findings"><h2>Findings</h2>']
    if not d.findings:
        parts.append('<p class="muted">No findings.</p>')
    for layer in GROUPS:
        findings = [f for f in d.findings if f.layer == layer]
        if findings:
            parts.append(f"<h3>{layer.value.capitalize()}</h3>")
            parts.extend(_finding(f, ids[id(f)]) for f in findings)
    parts.append("</section>\n")
    return "".join(parts)


def _finding(f, anchor: str) -> str:
    sev = f.severity.value
    prov = ('<span class="tag prov" title="a layer outside this one is degraded; fixing it may '
            'change this finding">provisional</span>' if f.provisional else "")
    rows = "".join(f"<dt>{label}</dt><dd>{_e(text)}</dd>"
                   for label, text in (("Fix", f.fix), ("Next experiment", f.next_experiment)) if text)
    evidence = ""
    if f.evidence:
        # Errors are what the reader came for: show their evidence; fold the rest.
        evidence = (f'<details{" open" if sev == "error" else ""}><summary>Evidence</summary>'
                    f'{_value(f.evidence)}</details>')
    return (f'<article class="finding sev-{_e(sev)}" id="{anchor}"><div class="fhead">'
            f'<span class="code">{_e(f.code)}</span><span class="fname">{_e(f.name)}</span>'
            f'<span class="pill sev-{_e(sev)}">{_e(sev)}</span>{prov}'
            f'<span class="fconf">confidence {_float(f.confidence):.2f}</span></div>'
            f'<p class="msg">{_e(f.message)}</p><dl>{rows}</dl>{evidence}</article>')


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
    return (f'<section class="card"><details open><summary><h2>Checks</h2><span class="csum">{summary}'
            f"</span></summary>{table}</details></section>\n")


def _footer(d) -> str:
    from degrade import __version__
    from degrade.diagnosis import SCHEMA
    return (f"<footer>degrade {_e(__version__)} · {_e(SCHEMA)} · total {d.total_seconds:.2f} s"
            "</footer>\n")


def _value(v: Any, depth: int = 0) -> str:
    """Evidence, readably: dicts as key/value tables, lists of records as tables, lists inline."""
    if hasattr(v, "tolist") and not isinstance(v, (list, tuple, dict)):
        v = v.tolist()  # numpy (or torch) arrays and scalars, as plain Python values
    if isinstance(v, dict):
        if not v:
            return '<span class="muted">{}</span>'
        if depth >= MAX_DEPTH:
            return f'<span class="muted">{{{len(v)} keys}}</span>'
        items = list(v.items())
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_value(x, depth + 1)}</td></tr>"
                       for k, x in items[:MAX_ITEMS])
        return f'<table class="kv">{rows}{_more_row(len(items), 2)}</table>'
    if isinstance(v, (list, tuple)):
        if depth >= MAX_DEPTH:
            return f'<span class="muted">[{len(v)} items]</span>'
        if v and all(isinstance(x, dict) for x in v):
            return _records(list(v), depth)
        shown = ", ".join(_value(x, depth + 1) for x in list(v)[:MAX_ITEMS])
        more = f' <span class="muted">… {len(v) - MAX_ITEMS} more</span>' if len(v) > MAX_ITEMS else ""
        return f'<span class="list">[{shown}]{more}</span>'
    return _scalar(v)


def _records(rows: list[dict], depth: int) -> str:
    """A list of dicts (per-head scores, per-bucket errors…) as one table with a column per key."""
    cols = list(dict.fromkeys(k for r in rows for k in r))[:MAX_ITEMS]
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_value(r.get(c, ''), depth + 1)}</td>" for c in cols) + "</tr>"
                   for r in rows[:MAX_ITEMS])
    return (f'<table class="rec"><thead><tr>{head}</tr></thead><tbody>{body}'
            f"{_more_row(len(rows), len(cols))}</tbody></table>")


def _more_row(n: int, span: int) -> str:
    return (f'<tr><td class="muted" colspan="{span}">… {n - MAX_ITEMS} more</td></tr>'
            if n > MAX_ITEMS else "")


def _scalar(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return f'<span class="lit">{_e(v)}</span>'
    if isinstance(v, float):
        return f'<span class="n">{v:.4g}</span>'
    if isinstance(v, int):
        return f'<span class="n">{v}</span>'
    text = str(v)
    if len(text) > MAX_CHARS:
        return f'{_e(text[:MAX_CHARS])}<span class="muted">… ({len(text)} chars)</span>'
    return _e(text)


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


CSS = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#f6f8fa;--card:#fff;
--bad:#cf222e;--bad-bg:#ffebe9;--ok:#1a7f37;--ok-bg:#dafbe1;--warn:#9a6700;--warn-bg:#fff8c5;
--skip:#6e7781;--skip-bg:#eaeef2;--info:#0969da;--info-bg:#ddf4ff;--prov:#8250df;--prov-bg:#fbefff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 system-ui,-apple-system,"Segoe UI",
Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 20px 40px}
code,.code,.n,.lit{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
h1{font-size:26px;margin:2px 0 0;line-height:1.2}
h2{font-size:16px;margin:0 0 10px}
h3{font-size:13px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted);margin:22px 0 8px}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:6px 18px;margin-bottom:14px}
.brand{font-weight:700;font-size:18px}.brand span{font-weight:400;color:var(--muted)}
.run{display:flex;flex-wrap:wrap;gap:4px 14px;color:var(--muted);min-width:0}
.run code{color:var(--fg);word-break:break-all}
.muted{color:var(--muted)}
.card,.verdict,.finding{background:var(--card);border:1px solid var(--line);border-radius:8px}
.card{padding:16px 18px;margin-bottom:16px;min-width:0}
.verdict{padding:18px 20px;margin-bottom:16px;border-left:6px solid var(--skip)}
.verdict.bad{border-left-color:var(--bad)}.verdict.bad h1{color:var(--bad)}
.verdict.ok{border-left-color:var(--ok)}.verdict.ok h1{color:var(--ok)}
.verdict.warn{border-left-color:var(--warn)}.verdict.warn h1{color:var(--warn)}
.vhead{display:flex;justify-content:space-between;align-items:flex-end;gap:16px;flex-wrap:wrap}
.label{font-size:12px;text-transform:uppercase;letter-spacing:.08em;color:var(--muted)}
.headline{font-size:15px;margin:10px 0 6px}
.meaning{font-size:12px;color:#666;margin:6px 0 0}
.next{margin:0;padding:8px 12px;background:var(--bg);border-radius:6px}
.next b{margin-right:6px}
.conf{min-width:180px;font-size:12px;color:var(--muted)}
.bar{height:8px;background:var(--skip-bg);border-radius:4px;overflow:hidden;margin-top:4px}
.bar i{display:block;height:100%;background:var(--fg)}
.verdict.bad .bar i{background:var(--bad)}.verdict.ok .bar i{background:var(--ok)}
.verdict.warn .bar i{background:var(--warn)}
.grid{display:grid;grid-template-columns:minmax(260px,1fr) minmax(0,2fr);gap:16px;margin-bottom:16px}
.grid .card{margin-bottom:0}
@media (max-width:820px){.grid{grid-template-columns:1fr}}
.ladder ol{list-style:none;margin:0;padding:0}
.rung{display:flex;gap:12px;position:relative;padding-bottom:14px}
.rung:not(:last-child)::before{content:"";position:absolute;left:15px;top:32px;bottom:0;width:2px;
background:var(--line)}
.dot{flex:none;width:32px;height:32px;border-radius:50%;display:flex;align-items:center;
justify-content:center;font-weight:700;color:#fff;background:var(--skip)}
.rbody{min-width:0;padding-top:4px}
.rtitle{font-weight:600;display:flex;align-items:center;gap:6px;flex-wrap:wrap}
.codes{margin-top:2px}.codes a{margin-right:6px}
.reason{font-size:12px;color:var(--muted);overflow-wrap:anywhere}
.s-degraded .dot{background:var(--bad)}.s-clean .dot{background:var(--ok)}
.s-inconclusive .dot{background:var(--warn)}
.pill,.tag{display:inline-block;font-size:11px;font-weight:600;padding:1px 8px;border-radius:10px;
background:var(--skip-bg);color:var(--skip);line-height:18px}
.pill.s-degraded,.pill.sev-error,.pill.c-failed{background:var(--bad-bg);color:var(--bad)}
.pill.s-clean,.pill.c-ran{background:var(--ok-bg);color:var(--ok)}
.pill.s-inconclusive,.pill.sev-warning{background:var(--warn-bg);color:var(--warn)}
.pill.sev-info{background:var(--info-bg);color:var(--info)}
.verdict-tag{background:var(--fg);color:#fff}
.tag.prov{background:var(--prov-bg);color:var(--prov)}
a.code{color:var(--info);text-decoration:none}a.code:hover{text-decoration:underline}
.chart{width:100%;height:auto;display:block}
.chart text{font-family:system-ui,sans-serif;fill:var(--muted)}
.chart .tick{font-size:11px}.chart .axis{font-size:12px}.chart .legend{font-size:11px;fill:var(--fg)}
.finding{padding:12px 16px;margin-bottom:10px;border-left:4px solid var(--skip)}
.finding.sev-error{border-left-color:var(--bad)}.finding.sev-warning{border-left-color:var(--warn)}
.finding.sev-info{border-left-color:var(--info)}
.fhead{display:flex;align-items:center;gap:8px;flex-wrap:wrap}
.fhead .code{font-weight:700}.fname{font-weight:600}.fconf{margin-left:auto;color:var(--muted);font-size:12px}
.msg{margin:6px 0;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:6px 0}
dt{color:var(--muted);font-weight:600}dd{margin:0;overflow-wrap:anywhere}
details summary{cursor:pointer;color:var(--muted);font-weight:600}
details summary h2{display:inline;margin-right:12px;color:var(--fg)}
.finding details{margin-top:6px}.finding details>table{margin-top:6px}
table{border-collapse:collapse}
.kv,.rec{font-size:12.5px;max-width:100%}
.kv th,.kv td,.rec th,.rec td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
.kv th,.rec th{background:var(--bg);font-weight:600;overflow-wrap:break-word}
.kv td,.rec td{overflow-wrap:anywhere}
.list{overflow-wrap:anywhere}
.checks{width:100%;margin-top:10px;font-size:13px}
.checks th,.checks td{border-bottom:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top}
.checks th{color:var(--muted);font-weight:600;font-size:12px}
.checks td:last-child{overflow-wrap:anywhere;color:var(--muted)}
.num{text-align:right!important;font-variant-numeric:tabular-nums}
.csum{font-weight:400}.c-failed{color:var(--bad)}
footer{color:var(--muted);font-size:12px;margin-top:24px;text-align:center}
"""
