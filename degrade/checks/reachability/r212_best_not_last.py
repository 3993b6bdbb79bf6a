"""R212 best-checkpoint-not-last: an earlier checkpoint scored materially better than the last."""
from __future__ import annotations

from degrade.check import Check, CheckSkipped
from degrade.checks.reachability import curves as C
from degrade.layers import Layer
from degrade.metric_direction import direction
from degrade.option import Option
from degrade.run.history import eval_set_label


class BestCheckpointNotLast(Check):
    """An earlier checkpoint scored materially better on the task metric than the last one.

    What it detects: the main eval set's task metric (the first logged eval metric whose name
    tells its direction: accuracy, F1, WER, CER, BLEU, ROUGE, perplexity ...; the loss is R202's)
    was better at some earlier evaluation than at the end, by more than the curve's noise and by a
    material amount, whatever the cause (overfitting, an LR too high after warmup, a bad late
    batch, a schedule restart). The best is the extreme of a 3-point rolling median (one lucky
    evaluation is not a best checkpoint), the end is the median of the last 3 evaluations, and
    the fall from the best must be a trend (Mann-Kendall p <= 0.05) or a level shift (most evals
    after the best lie 3 noise sigmas beyond it).
      - error: the fall is >= `min_fall_sigmas` noise sigmas, >= `min_fall_fraction` of the best
        value, with at least `min_evals_after_best` evals after the best;
      - nothing otherwise.

    Why it matters: the run produced a better model than the one it ended with. Unless the
    Trainer reloaded the best checkpoint at the end (load_best_model_at_end with
    metric_for_best_model), the final model gives that difference away; either way the steps after
    the best were wasted or harmful. The cost is stated in the metric's own units.

    Evidence used: the main eval set's task metric over the run; trainer_state's
    best_model_checkpoint and best_metric when present.

    Fix: keep the best checkpoint (load_best_model_at_end=True with metric_for_best_model, or
    EarlyStoppingCallback); then find why the metric fell (R202 overfitting, R203 instability,
    R206 learning rate).
    """

    code, name, layer = "R212", "best-checkpoint-not-last", Layer.REACHABILITY
    needs = frozenset({"eval_curve"})
    options = (
        Option("min_fall_fraction", 0.05, source="ANCHORS.md: a < 5% window change is 'not "
               "decreasing'; the same relative size counts as a fall", help="The fall from the best "
               "value, as a fraction of it, for an error."),
        Option("min_fall_sigmas", 3.0, source="three-sigma rule on the metric curve's own "
               "point-to-point noise (MAD of first differences)", help="The fall must also exceed "
               "this many times the curve's noise."),
        Option("min_evals_after_best", 2, source="design choice: one eval after the best is a point, "
               "two start a trend", help="Evals needed after the best to read a fall."),
    )

    def run(self, run):
        h = run.history
        es = h.main_eval_set()
        names = [m for m in h.eval_metrics(es) if direction(m) is not None and not m.endswith("loss")]
        if not names:
            raise CheckSkipped(f"the {eval_set_label(es)} set logs no task metric whose direction its name "
                               "tells (accuracy, F1, WER, CER, BLEU, ROUGE ...); R202 reads the loss")
        name = min(names, key=lambda m: (0 if "accuracy" in m else 1, m))
        sign = direction(name)
        s, v = C.finite(*h.series(name, es))
        if s.size < 4:
            raise CheckSkipped(f"{name} was logged at {s.size} evaluation(s); at least 4 are needed")
        # Read the metric as a loss (lower is better) so the eval-curve minimum-and-rise applies.
        rise = C.rise_after_min(s, -sign * v)
        o = self.opts
        best, end = -sign * rise.best_loss, -sign * rise.end_loss
        fall = rise.rise
        frac = fall / abs(best) if best else float("inf")
        ev = {"metric": name, "eval_set": eval_set_label(es), "higher_is_better": sign > 0,
              "best_value": C.num(best), "best_step": int(rise.best_step), "end_value": C.num(end),
              "last_step": int(rise.last_step), "cost": C.num(fall), "cost_fraction": C.num(frac, 3),
              "noise_sigma": C.num(rise.noise), "evals_after_best": rise.points_after_best,
              "fall_trend_p": C.num(rise.trend_p, 3)}
        if run.best_checkpoint_hint:
            ev["trainer_best_model_checkpoint"] = run.best_checkpoint_hint
        shown = rise.trend_p <= 0.05 or rise.level_shift()
        if not (fall > 0 and rise.points_after_best >= o["min_evals_after_best"] and shown
                and fall >= o["min_fall_sigmas"] * rise.noise and frac >= o["min_fall_fraction"]):
            return []
        unit = "" if abs(best) <= 1.0 else " points"
        return [self.finding(
            "error", f"The last checkpoint gives up {C.num(fall, 3)}{unit} of {name}: it was "
            f"{C.num(best, 4)} at step {int(rise.best_step)} and ended at {C.num(end, 4)} by step "
            f"{int(rise.last_step)} ({frac:.0%} of the best, {fall / rise.noise:.1f} times the curve's "
            f"noise)." if rise.noise > 0 else
            f"The last checkpoint gives up {C.num(fall, 3)}{unit} of {name}: it was {C.num(best, 4)} at "
            f"step {int(rise.best_step)} and ended at {C.num(end, 4)}.",
            confidence=0.8, evidence=ev,
            fix="Keep the best checkpoint (load_best_model_at_end=True with metric_for_best_model, or "
                "EarlyStoppingCallback); then find why the metric fell after step "
                f"{int(rise.best_step)} (R202, R203, R206).",
            next_experiment=f"Evaluate the checkpoint nearest step {int(rise.best_step)} and the last one on "
                            f"a fresh held-out sample: a gap beyond its error bar confirms the loss of "
                            f"{name}; a tie says the fall was eval noise.")]

