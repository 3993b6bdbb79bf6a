"""The v2 scorecard as markdown: what docs/benchmarks.md shows and what the terminal prints."""
from __future__ import annotations

from typing import Any


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _ci(ci) -> str:
    return "" if not ci else f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"


def markdown(r: dict[str, Any]) -> str:
    out = [f"DegradeBench v2, bench seed {r['bench_seed']}, split {r['split']}: {r['n_cases']} cases run, "
           f"{r['n_scored']} scored, {len(r['discarded'])} discarded (fault not proven), {r['n_errors']} errors; "
           f"wall {r['wall_seconds']:.0f} s with {r['workers']} workers.", "",
           "| split | n (healthy) | layer top-1 [95% CI] | false alarms | inconclusive on healthy | "
           "not diagnosable | code recall (errors) | ECE |", "|---|---|---|---|---|---|---|---|"]
    for name, s in r["splits"].items():
        out.append(f"| {name} | {s['n']} ({s['n_healthy']}) | {_pct(s['layer_top1'])}{_ci(s['layer_top1_ci'])} | "
                   f"{_pct(s['false_alarm_rate'])} | {_pct(s['inconclusive_on_healthy'])} | {s['errors']} | "
                   f"{_pct(s['code_recall'])} | {s['ece'] if s['ece'] is not None else 'n/a'} |")
    for name, s in r["splits"].items():
        out += ["", f"**{name}**: per fault " + ", ".join(
            f"{k} {_pct(v['layer_top1'])} (n={v['n']})" for k, v in s["per_fault"].items()),
            "", "per model class " + ", ".join(f"{k} {_pct(v['layer_top1'])} (n={v['n']})"
                                               for k, v in s["per_model"].items()),
            "", "per family " + ", ".join(f"{k} {_pct(v['layer_top1'])} (n={v['n']})"
                                          for k, v in s["per_family"].items())]
        labels = sorted({p for row in s["confusion"].values() for p in row})
        out += ["", "| expected \\ predicted | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        out += [f"| {e} | " + " | ".join(str(row.get(p, 0)) for p in labels) + " |" for e, row in s["confusion"].items()]
        if s["reliability"]:
            out += ["", "| confidence bin | n | mean confidence | hit rate |", "|---|---|---|---|"]
            out += [f"| {b['bin'][0]:.1f}-{b['bin'][1]:.1f} | {b['n']} | {b['mean_confidence']} | {b['hit_rate']} |"
                    for b in s["reliability"]]
        if s["worst"]:
            out += ["", "Worst cases (misses, most confident first):"]
            out += [f"- {w['name']}: expected {w['expected']}, got {w['predicted']} "
                    f"(confidence {w['confidence']}; errors {','.join(w['found']) or '-'}) — {w['headline']}"
                    for w in s["worst"]]
    for name, a in r.get("anchors", {}).items():
        out += ["", f"Anchors on the {name} split ({a['n']} scored cases; the curve heuristics name no layer, "
                "so any flag counts as reachability):", "",
                "| | layer top-1 [95% CI] | false alarms | reachability recall |", "|---|---|---|---|"]
        for label, key in (("degrade", "degrade"), ("curve heuristics (AUTOTRAINER/UMLAUT rules)", "curve_heuristics")):
            v = a[key]
            out.append(f"| {label} | {_pct(v['layer_top1'])}{_ci(v['layer_top1_ci'])} | {_pct(v['false_alarm_rate'])} | "
                       f"{_pct(v['reachability_recall'])} |")
    if "weightwatcher" in r:
        from degrade.bench.cli import _weightwatcher_text
        out += ["", _weightwatcher_text(r["weightwatcher"]).strip()]
    if r["discarded"]:
        out += ["", "Discarded by the generator:"] + [f"- {d['name']}: {d['why']}" for d in r["discarded"]]
    return "\n".join(out) + "\n"

