"""What a diagnosis plans to spend on the model, in eval passes, before it starts: the shared eval
pass, the training sample, each declared probe (Check.probes) and I302's attribution, at the
budget's sizes (degrade/budget.py). Explaining passes (O101 on a mismatch) are extra and only
run when there is something to explain; they are not planned."""
from __future__ import annotations


def planned_passes(run, specs) -> dict[str, float]:
    models = [s for s in specs if "model" in s.needs]
    if not models or run.model_unavailable() is not None:
        return {}
    b = run.budget
    plan: dict[str, float] = {}
    if run.eval_data is not None:
        plan["eval pass"] = 1.0
    if run.train_data is not None:
        plan["training sample"] = b.train_passes
    probes = sum(s.probes for s in models if "eval_data" not in s.needs or run.eval_data is not None)
    if probes:
        plan["probes"] = round(probes * b.probe_passes, 3)
    if any(s.code == "I302" for s in models) and run.eval_data is not None:
        plan["attribution"] = b.attribution_passes
    return plan
