"""Plain-text rendering of a `degrade compare` result (JSON comes from Comparison.to_dict)."""
from __future__ import annotations

from degrade.checks.reachability.curves import num
from degrade.compare import Comparison

_READING = {"beyond-noise": "beyond noise: a real difference",
            "within-noise": "within noise: could be a lucky seed or evaluation",
            "unknown-noise": "noise unknown (no eval size, per-example predictions or eval curve)"}


def render(c: Comparison) -> str:
    lines = [f"A: {c.a}", f"B: {c.b}", ""]
    if c.params_diff:
        lines.append(f"Parameters that differ ({len(c.params_diff)}; {c.params_same} equal):")
        width = max(len(k) for k in c.params_diff)
        for k, (a, b) in c.params_diff.items():
            lines.append(f"  {k:<{width}}  A={_short(a)}  B={_short(b)}")
    else:
        lines.append(f"No parameter differs ({c.params_same} compared): only the seed or "
                     "unrecorded settings can explain a difference.")
    lines.append("")
    if c.metrics:
        lines.append("Final eval metrics (B - A):")
        for m in c.metrics:
            better = ""
            if m.diff != 0:
                b_better = (m.diff > 0) == m.higher_is_better
                better = " (B better)" if b_better else " (A better)"
            noise = []
            if m.se_eval is not None:
                noise.append(f"eval SE {num(m.se_eval, 3)} ({'paired' if m.paired else 'unpaired'}"
                             f"{f', n={m.n}' if m.n else ''})")
            if m.seed_sd is not None:
                noise.append(f"late-curve sd {num(m.seed_sd, 3)}")
            lines.append(f"  {m.name}: A={num(m.a)} B={num(m.b)} diff={num(m.diff, 3)}{better}; "
                         f"{'; '.join(noise) or 'no noise estimate'} -> {_READING[m.reading]}")
    for note in c.notes:
        lines.append(f"Note: {note}")
    return "\n".join(lines) + "\n"


def _short(v) -> str:
    text = str(v)
    return text if len(text) <= 40 else text[:37] + "..."
