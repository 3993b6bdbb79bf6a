"""What a finding costs, in the run's own terms (DESIGN.md §3: a finding's `cost`).

{"loss": {"value", "ci"}, "metric": {"name", "value", "ci"}}: the eval loss (nats per target) and
the logged metric the fault moves, with a 95% interval, read from what the check measured. Only
checks whose evidence measures a cost have one; the others have none (never a guess). The loss
budget (loss_budget.py) is built from the same numbers.
"""
from __future__ import annotations

from typing import Any, Callable

Z95 = 1.96


def _ci(value: float, se: float | None) -> list[float]:
    se = float(se or 0.0)
    return [round(value - Z95 * se, 6), round(value + Z95 * se, 6)]


def _part(value: Any, ci: list[float], name: str | None = None) -> dict[str, Any] | None:
    if value is None:
        return None
    out: dict[str, Any] = {"value": round(float(value), 6), "ci": ci}
    if name:
        out["name"] = name
    return out


def _o101(ev: dict) -> dict:
    """Logged minus recomputed: what the evaluation itself adds (or hides)."""
    logged, again = ev.get("logged_loss"), ev.get("recomputed_loss_token_mean")
    loss = None if None in (logged, again) else _part(logged - again, _ci(logged - again, ev.get("loss_se_of_comparison")))
    acc_logged, acc = ev.get("logged_accuracy"), ev.get("recomputed_accuracy")
    metric = None if None in (acc_logged, acc) else _part(acc_logged - acc, [acc_logged - acc] * 2,
                                                          ev.get("accuracy_key") or "accuracy")
    return {"loss": loss, "metric": metric}


def _r201(ev: dict) -> dict:
    """What training twice as long is projected to win (its fits' range as the interval)."""
    gain = ev.get("projected_gain_2x")
    if gain is None or ev.get("curve") in (None, "train"):
        return {}
    lo, hi = ev.get("projected_gain_2x_range") or (gain, gain)
    return {"loss": _part(max(gain, 0.0), [max(lo, 0.0), max(hi, 0.0)])}


def _r202(ev: dict) -> dict:
    """The rise since the best eval: what keeping the best checkpoint wins."""
    rise = ev.get("rise")
    if rise is None or rise <= 0:  # no rise since the best eval: nothing to win by going back
        return {}
    half = Z95 * 1.25 * (ev.get("noise_sigma") or 0.0) * (2 / 3) ** 0.5  # two 3-point medians
    out = {"loss": _part(rise, [rise - half, rise + half])}
    best, end = ev.get("metric_at_best"), ev.get("metric_end")
    if None not in (best, end):
        gap = (best - end) if ev.get("metric_higher_is_better", True) else (end - best)
        out["metric"] = _part(gap, [gap, gap], ev.get("metric"))
    return out


def _r212(ev: dict) -> dict:
    cost = ev.get("cost")
    half = Z95 * (ev.get("noise_sigma") or 0.0) * 2 ** 0.5  # best and last: two noisy evals
    return {} if cost is None else {"metric": _part(cost, [cost - half, cost + half], ev.get("metric"))}


def _o103(ev: dict) -> dict:
    """The reported value against the clean items only: what contamination adds."""
    split = ev.get("metric_split") or {}
    out = {}
    if split.get("loss_shift") is not None:
        out["loss"] = _part(split["loss_shift"], _ci(split["loss_shift"], split.get("se_of_loss")))
    if split.get("shift") is not None:
        out["metric"] = _part(split["shift"], _ci(split["shift"], split.get("se_of_metric")), split.get("metric"))
    return out


def _p402(ev: dict) -> dict:
    """Accuracy within the trained length minus beyond it."""
    s = ev.get("split") or {}
    drop = s.get("drop")
    return {} if drop is None else {"metric": _part(drop, _ci(drop, s.get("drop_se")), "accuracy")}


READERS: dict[str, Callable[[dict], dict]] = {
    "O101": _o101, "O103": _o103, "R201": _r201, "R202": _r202, "R212": _r212, "P402": _p402}


def cost_of(code: str, evidence: dict) -> dict[str, Any] | None:
    reader = READERS.get(code)
    if reader is None:
        return None
    try:
        parts = {k: v for k, v in reader(evidence).items() if v is not None}
    except (TypeError, ValueError, AttributeError):  # evidence of another shape: no cost
        return None
    return parts or None


def cost_text(cost: dict[str, Any] | None) -> str:
    """'eval loss 0.44 (95% CI 0.28-0.73); accuracy 0.08 (95% CI 0.06-0.10)', or ''."""
    if not cost:
        return ""
    parts = []
    for key in ("loss", "metric"):
        if (c := cost.get(key)) is not None:
            name = "eval loss" if key == "loss" else str(c.get("name") or "metric")
            lo, hi = c["ci"]
            band = f" (95% CI {lo:.3g} to {hi:.3g})" if lo != hi else ""
            parts.append(f"{name} {c['value']:.3g}{band}")
    return "; ".join(parts)
