"""Plain-text rendering of `degrade learning-curve` (JSON comes from DataCurve.to_dict)."""
from __future__ import annotations

from degrade.learning_curve import DataCurve

_READING = {"data-limited": "DATA-LIMITED", "diminishing": "DIMINISHING RETURNS",
            "saturated": "SATURATED", "not-decreasing": "NOT DECREASING", "unknown": "UNKNOWN"}


def render(c: DataCurve) -> str:
    lines = [f"Learning curve against training-set size: best eval_{c.metric} per run", ""]
    width = max(len(p.run) for p in c.points)
    for p in c.points:
        lines.append(f"  {p.run:<{width}}  D={p.size:<12g} {c.metric}={p.value:.4g} (step {p.step:g})"
                     f"  [size from {p.size_from}]")
    lines += ["", f"{_READING[c.reading]}: {c.message}"]
    if c.fit and c.fit.get("gain_from_2x_loo_range"):
        lo, hi = c.fit["gain_from_2x_loo_range"]
        lines.append(f"  gain from doubling the data: {c.fit['gain_from_2x']} (leave-one-out range {lo} to {hi})")
    return "\n".join(lines) + "\n"
