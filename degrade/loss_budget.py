"""The loss budget: observed -> re-observed -> reachable -> floor, each step with its cost and CI.

DESIGN.md §1 makes cost the common currency: every step of the chain says how much of the eval
loss (nats per target, the run's own unit) one layer accounts for. The budget is read from the
findings' evidence, after the ladder, so it only states what a check measured:
- observed: the eval loss the run logged for the diagnosed checkpoint (O101's logged value, else
  the level of the logged eval curve at its end: R202, or R201's fit when the eval curve decided);
- re-observed: what degrade recomputed for that checkpoint on the eval data (O101), with the
  comparison's 95% interval: the difference is the observation's cost;
- reachable: what training could still reach: the best checkpoint's eval loss (R202: the rise
  since the minimum) or the projected gain of training on (R201: the median of its tail fits, their
  range as the interval), whichever is larger, when that check raised an error or a warning;
- floor: the irreducible loss, as D501's interval: what repeated contexts in the eval data force
  (often 0) up to the lowest loss anything measured reached (the best constant, the model).
A step no finding measured is listed under `not_measured` with the reason.
"""
from __future__ import annotations

from typing import Any

from degrade.finding_cost import cost_of
from degrade.stats import num

Z95 = 1.96


def build(findings: list) -> dict[str, Any] | None:
    # The observation is a measurement whatever its severity; a gain counts only where its check
    # called it more than context (an error or a warning).
    ev = {f.code: f.evidence for f in findings
          if f.code in ("O101", "D501") or (f.code in ("R201", "R202") and f.severity.value in ("error", "warning"))}
    o101, r201, r202, d501 = (ev.get(c, {}) for c in ("O101", "R201", "R202", "D501"))
    steps: list[dict[str, Any]] = []
    missing: list[str] = []

    observed, source = _observed(o101, r201, r202)
    if observed is None:
        return None
    steps.append({"step": "observed", "loss": num(observed, 4), "source": source})

    level = observed
    recomputed = o101.get("recomputed_loss_token_mean")
    if recomputed is not None:
        se = o101.get("loss_se_of_comparison") or 0.0
        steps.append({"step": "re-observed", "loss": num(recomputed, 4), "code": "O101",
                      "cost": num(observed - recomputed, 4),
                      "ci": [num(recomputed - Z95 * se, 4), num(recomputed + Z95 * se, 4)]})
        level = recomputed
    else:
        missing.append("re-observed: no model and eval data to evaluate the checkpoint again (O101)")

    gains = []  # what training could still win: finding_cost.py's loss cost of R202 and R201
    for code, what in (("R202", "the best checkpoint's eval loss"), ("R201", "training twice as long (projected)")):
        loss = (cost_of(code, ev[code]) or {}).get("loss") if code in ev else None
        if loss is not None:
            gains.append((loss["value"], loss["ci"], code, what))
    if gains:
        gain, (lo, hi), code, what = max(gains, key=lambda g: g[0])
        steps.append({"step": "reachable", "loss": num(level - gain, 4), "code": code, "source": what,
                      "cost": num(gain, 4), "ci": [num(level - hi, 4), num(level - lo, 4)]})
    else:
        missing.append("reachable: no eval curve to read the best checkpoint or a projection from "
                       "(R201, R202)")
    if d501.get("floor_lower") is not None:
        lower, upper = d501["floor_lower"], d501["floor_upper"]
        steps.append({"step": "floor", "loss": lower, "code": "D501", "interval": [lower, upper],
                      "source": f"between what repeated contexts force and what {d501['upper_from']} reached"})
    else:
        missing.append("floor: no eval data to bound it from (D501)")
    return {"unit": "eval loss, nats per target", "steps": steps, "not_measured": missing}


def _observed(o101: dict, r201: dict, r202: dict) -> tuple[float | None, str]:
    if o101.get("logged_loss") is not None:
        return float(o101["logged_loss"]), f"logged eval loss at step {o101.get('record_step')}"
    if r202.get("end_loss") is not None:
        return float(r202["end_loss"]), f"logged {r202.get('eval_set', 'eval')} loss at its end (last 3 evals)"
    if r201.get("fitted_loss_at_end") is not None and r201.get("curve") not in (None, "train"):
        return float(r201["fitted_loss_at_end"]), f"logged {r201['curve']} loss at its end (fitted)"
    return None, ""
