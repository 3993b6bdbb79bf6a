"""Does a built case prove itself? Judged from its proof.json and its healthy twin's (build.py).

- healthy runs must be trained to the convergence criterion: over the last 30% of the run the
  logged eval accuracy rose by at most FLAT_ACCURACY or the eval loss fell by at most
  max(FLAT_FRACTION of the loss at 70%, FLAT_NATS), and the correct held-out accuracy is at
  least LEARNED (the recipe learned its task; a seed whose healthy run did not is
  dropped with its faulty cases: they would have no twin to be measured against);
- `cost` faults: the twin learned the task (accuracy >= LEARNED) and the fault costs >= COST_MARGIN correct held-out accuracy;
- `logged` faults: the logged eval loss is >= LOSS_MARGIN (relative) away from a correct
  evaluation on clean held-out rows, or (classification) the logged accuracy >= COST_MARGIN;
- `immaterial` (healthy but unfinished): the twin learned the task and is < IMMATERIAL_GAIN better;
- `logged-train` (bugs.py): the last logged training loss is >= LOSS_MARGIN (relative) away from a
  correct evaluation of the final model on training rows (the `logged` rule, for the training loss).

A case that does not prove itself is discarded by the generator, never scored.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from degrade.bench.v2.faults import COST_MARGIN, IMMATERIAL_GAIN, LOSS_MARGIN

LEARNED = 0.9  # correct held-out accuracy a healthy recipe must reach
FLAT_FRACTION, FLAT_NATS, FLAT_ACCURACY = 0.02, 0.02, 0.01


def read(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / "proof.json").read_text())
    except (OSError, ValueError):
        return None


def converged(proof: dict) -> tuple[bool, str]:
    points = [p for p in proof["logged"]["curve"] if p[1] is not None and math.isfinite(p[1])]
    if len(points) < 4:
        return False, f"only {len(points)} eval points"
    k = max(0, int(round(0.7 * (len(points) - 1))))
    at70, end = points[k][1], points[-1][1]
    drop = at70 - end
    gain = (points[-1][2] - points[k][2]) if points[-1][2] is not None and points[k][2] is not None else None
    acc = proof["correct"]["accuracy"]
    flat = drop <= max(FLAT_FRACTION * at70, FLAT_NATS) or (gain is not None and gain <= FLAT_ACCURACY)
    if not flat:
        return False, (f"still improving over the last 30%: eval loss {at70:.3g} -> {end:.3g}"
                       + (f", accuracy +{gain:.3f}" if gain is not None else ""))
    if acc < LEARNED:
        return False, f"held-out accuracy {acc:.3f} < {LEARNED}: the recipe did not learn the task"
    return True, f"flat (last 30%: eval loss {at70:.3g} -> {end:.3g}), held-out accuracy {acc:.3f}"


def judge(proof_kind: str, proof: dict | None, twin: dict | None) -> tuple[bool, str, dict]:
    """(keep, why, measured cost)."""
    if proof is None:
        return False, "no proof.json", {}
    acc = proof["correct"]["accuracy"]
    if proof_kind == "converged":
        ok, why = converged(proof)
        return ok, why, {}
    if proof_kind == "logged":
        logged, correct = proof["logged"], proof["correct"]
        rel = (abs(logged["eval_loss"] - correct["loss"]) / max(correct["loss"], 1e-6)
               if logged.get("eval_loss") is not None else 0.0)
        gap = (abs(logged["eval_accuracy"] - acc) if logged.get("eval_accuracy") is not None
               and proof["recipe"]["family"] in ("order", "dyck", "lexical") else 0.0)
        cost = {"logged_loss": logged.get("eval_loss"), "correct_loss": correct["loss"],
                "relative_loss_error": round(rel, 4), "accuracy_error": round(gap, 4)}
        ok = rel >= LOSS_MARGIN or gap >= COST_MARGIN
        return ok, (f"logged eval loss {logged.get('eval_loss')} vs correct {correct['loss']:.4g} "
                    f"({rel:.1%}); accuracy off by {gap:.3f}"), cost
    if proof_kind == "logged-train":
        logged, correct = proof.get("logged_train_loss"), proof["correct_train"]["loss"]
        gap = abs(logged - correct) if logged is not None else 0.0
        rel = gap / max(correct, 1e-6)
        cost = {"logged_train_loss": logged, "correct_train_loss": correct, "relative_loss_error": round(rel, 4)}
        return (rel >= LOSS_MARGIN,
                f"last logged training loss {logged} vs correct {correct:.4g} ({rel:.1%})", cost)
    if twin is None or twin["correct"]["accuracy"] < LEARNED:
        return False, "its healthy twin is missing or did not learn the task", {}
    loss_ = twin["correct"]["accuracy"] - acc
    cost = {"twin_accuracy": twin["correct"]["accuracy"], "accuracy": acc, "accuracy_cost": round(loss_, 4)}
    if proof_kind == "cost":
        return loss_ >= COST_MARGIN, f"costs {loss_:.3f} held-out accuracy against its twin", cost
    return loss_ < IMMATERIAL_GAIN, f"the finished twin is {loss_:.3f} better", cost
