"""D501 loss-floor: an interval for the irreducible eval loss, from the data and the model."""
from __future__ import annotations

from typing import Any

from degrade.check import Check, CheckSkipped
from degrade.layers import Layer
from degrade.probing.target_stats import target_statistics
from degrade.run.tasks import TOKEN_TASKS
from degrade.stats import num


class LossFloor(Check):
    """An interval for the eval loss no model can go below (M_D: the thing-in-itself).

    What it detects: nothing is wrong here; it bounds the loss budget's last step.
      - lower bound: the empirical conditional entropy of the eval targets given their whole input
        context (identical prompts with different answers: no predictor can separate them). It is
        0 when every context is unique or answered one way, so on most data it only says "the data
        does not force any loss";
      - upper bound: the lowest eval loss anything measured here reached: the best constant
        predictor (the eval targets' entropy) and, when the model is there, the model itself (the
        shared eval pass). The floor lies at or below what was achieved.
    Always info: the floor is an estimate for the budget, never a verdict.

    Why it matters: the gap between the re-observed loss and the floor is what all the layers
    together can still win; a model already near the floor's upper bound with a lower bound of 0
    says the data holds no more information the run can show, not that training failed.

    Evidence used: the eval data (targets and their contexts, the budget's eval sample), the model's
    per-example eval loss when the model is there.

    Fix: none (an estimate). Tighter bounds need more data: repeated contexts for the lower bound, a
    better predictor for the upper one.
    """

    code, name, layer = "D501", "loss-floor", Layer.FLOOR
    needs = frozenset({"eval_data"})
    tasks = frozenset({"causal-lm", "sequence-classification", "seq2seq"})

    def run(self, run):
        data = run.eval_data
        lm = data.label is None
        idx = run.engine.eval_indices()
        stats = target_statistics(data, idx, lm)
        if stats["targets"] == 0:
            raise CheckSkipped("the eval data holds no scored targets")
        upper, source = stats["trivial_loss"], "the best constant predictor (the targets' entropy)"
        ev: dict[str, Any] = {"floor_lower": num(stats["floor"], 4), "constant_predictor_loss":
                              num(stats["trivial_loss"], 4), "targets": stats["targets"],
                              "distinct_contexts": stats["distinct_contexts"]}
        if run.model_unavailable() is None and (run.model().task in TOKEN_TASKS) == lm:
            model_loss = run.eval_scores().token_mean_loss
            ev["model_loss"] = num(model_loss, 4)
            if model_loss < upper:
                upper, source = model_loss, "the model itself"
        ev.update({"floor_upper": num(upper, 4), "upper_from": source})
        return [self.finding(
            "info", f"The eval loss floor lies between {num(stats['floor'], 3)} (what repeated contexts "
            f"force) and {num(upper, 3)} (reached by {source}).", confidence=0.9, evidence=ev,
            fix="None: an estimate for the loss budget.")]
