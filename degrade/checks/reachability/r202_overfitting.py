"""R202 overfitting: eval loss rising since an early minimum while the train loss keeps falling."""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from degrade.check import Check
from degrade.checks.reachability import curves as C
from degrade.layers import Layer
from degrade.run.history import eval_set_label

# Eval metrics where higher is better, by name; the first found is used to see whether the rise
# of the eval loss costs the metric too (loss can rise from over-confidence while accuracy holds).
_HIGHER_IS_BETTER = re.compile(r"(accuracy|^acc$|_acc$|f1|exact_match|^em$|bleu|rouge|precision|"
                               r"recall|auc|matthews|mcc|spearman|pearson|chrf|meteor)", re.I)


class Overfitting(Check):
    """The eval loss reached its minimum well before the end and has risen since, while the train
    loss kept falling.

    What it detects: the U-shaped eval curve of overfitting (UMLAUT's heuristic: eval loss rising
    while train loss falls; the best checkpoint well before the last). The best step is the minimum
    of a 3-point rolling median of the main eval set's loss (one lucky evaluation is not a best
    step); the end level is the median of the last 3 evals.
      - error: the best step is at most `max_best_fraction` of the way through, the eval loss has
        risen by at least `min_rise_fraction` of its minimum and by `min_rise_sigmas` times the
        curve's point-to-point noise, it trends up after the minimum (Mann-Kendall p <= 0.01,
        at least `min_evals_after_best` evals after it), and the train loss fell over the same
        stretch;
      - warning: a smaller rise (>= 2/5 of min_rise_fraction, trend p <= 0.05), a rise with no train
        loss to confirm it, or a rise of the loss that did not cost the eval accuracy/F1 metric
        (over-confidence: worse calibration, same decisions);
      - info: the eval and train losses rose together (not overfitting: see R203 instability), or
        a perception check found the failure concentrated along one axis (see below).
    Other eval sets are read the same way; when only a secondary set overfits, a warning names it.

    Why it matters: past the minimum, every further step makes the model worse on new data; the
    last checkpoint is not the best one the run produced. Training reached what the model can do
    on the train set, but not a model that generalises.

    Evidence used: the loss of each eval set, the train loss around the best step and at the end,
    higher-is-better eval metrics (accuracy, F1, ...) at the best step and at the end, the
    train/eval gap at the end, trainer_state's best_model_checkpoint.

    Deferring to perception (DESIGN.md section 1): a failure concentrated along one axis
    (position, length, dependency distance, an input property where train and eval differ) is not
    overfitting: it is evidence about the hypothesis. When run.context["axes"] holds such an axis
    (published by a perception check, which runs first), this check reports its reading as info
    and says it defers to that evidence.

    Fix: keep the best checkpoint (load_best_model_at_end=True with metric_for_best_model, or
    EarlyStoppingCallback); then regularise: more or augmented data, fewer epochs, weight
    decay/dropout, a lower peak LR.

    Options:
      max_best_fraction (0.8): the best step must lie at or before this fraction of the last eval
        step for an error ("best checkpoint well before the last", UMLAUT via ANCHORS.md).
      min_rise_fraction (0.05): eval-loss rise since the minimum, as a fraction of it, for an error
        (ANCHORS.md: 5% is the "not decreasing" window drop; the same size counts as a rise).
      min_rise_sigmas (3.0): the rise must also exceed this many times the curve's noise (MAD of
        first differences), so a noisy eval curve does not read as a rise.
      min_evals_after_best (2): evals needed after the minimum to call it a trend.
    """

    code, name, layer = "R202", "overfitting", Layer.REACHABILITY
    needs = frozenset({"eval_curve"})
    options = {"max_best_fraction": 0.8, "min_rise_fraction": 0.05, "min_rise_sigmas": 3.0,
               "min_evals_after_best": 2}

    def run(self, run):
        h = run.history
        main = h.main_eval_set()
        train_s, train_v = C.finite(*h.series("loss"))
        readings = {es: self._read(h, es, train_s, train_v) for es in h.eval_sets}
        readings = {es: r for es, r in readings.items() if r is not None}
        main_r = readings.get(main)
        others = {eval_set_label(es): r["summary"] for es, r in readings.items() if es != main}
        if main_r is None:
            return []
        ev = dict(main_r["evidence"])
        if others:
            ev["other_eval_sets"] = others
        if run.best_checkpoint_hint:
            ev["trainer_best_model_checkpoint"] = run.best_checkpoint_hint
        level, msg, conf = main_r["level"], main_r["message"], main_r["confidence"]
        fix, nxt = main_r["fix"], main_r["next"]
        if level is None:
            bad = sorted(es for es, r in readings.items() if es != main and r["level"] == "error")
            if not bad:
                return []
            level, conf = "warning", 0.5
            names = ", ".join(eval_set_label(es) for es in bad)
            msg = (f"The main eval set ({eval_set_label(main)}) does not overfit, but {names} "
                   f"{'does' if len(bad) == 1 else 'do'}: {readings[bad[0]]['message']}")
            fix, nxt = readings[bad[0]]["fix"], readings[bad[0]]["next"]
        elif others:
            rose = sum(s["reading"] in ("error", "warning") for s in others.values())
            msg += f" {rose} of {len(others)} other eval set(s) rose the same way."

        axes = run.context.get("axes") or []
        if axes and level in ("error", "warning"):
            names = ", ".join(f"{a.get('axis', '?')} ({a.get('code', '?')})" if isinstance(a, dict)
                              else str(a) for a in axes)
            ev["deferred_to_axes"] = axes
            return [self.finding(
                "info", f"{msg} Deferring to perception evidence: the failure is concentrated "
                f"along {names}, which is a hypothesis problem, not overfitting.",
                confidence=conf, evidence=ev,
                fix="Follow the perception finding(s) for the axis; regularising would not fix it.",
                next_experiment=nxt)]
        return [self.finding(level, msg, confidence=conf, evidence=ev, fix=fix, next_experiment=nxt)]

    # ---- one eval set --------------------------------------------------------------------------
    def _read(self, h, es: str, train_s: np.ndarray, train_v: np.ndarray) -> dict[str, Any] | None:
        o = self.opts
        s, v = C.finite(*h.series("loss", es))
        rise = C.rise_after_min(s, v)
        if rise is None:
            return None
        label = eval_set_label(es)
        best_frac = rise.best_step / rise.last_step if rise.last_step > 0 else 1.0
        significant = rise.rise >= o["min_rise_sigmas"] * rise.noise and rise.rise > 0
        enough = rise.points_after_best >= o["min_evals_after_best"]
        ev: dict[str, Any] = {"eval_set": label, **rise.evidence(),
                              "best_step_fraction": C.num(best_frac, 3),
                              "rise_trend_p": C.num(rise.trend_p, 3)}

        train = self._train_around(train_s, train_v, rise.best_step, s)
        ev.update(train)
        if "train_end_loss" in train:
            ev["train_eval_gap_at_end"] = C.num(rise.end_loss - train["train_end_loss"])
        metric = self._metric(h, es, rise.best_step)
        ev.update(metric)

        level = None
        if significant and enough and rise.trend_p <= 0.01 and best_frac <= o["max_best_fraction"] \
                and rise.rise_fraction >= o["min_rise_fraction"]:
            level = "error"
        elif significant and enough and rise.trend_p <= 0.05 and best_frac <= 0.9 \
                and rise.rise_fraction >= 0.4 * o["min_rise_fraction"]:
            level = "warning"
        summary = {"reading": level or "clean", "best_step": int(rise.best_step),
                   "rise_fraction": C.num(rise.rise_fraction, 3)}
        out: dict[str, Any] = {"level": level, "evidence": ev, "summary": summary,
                               "confidence": 0.0, "message": "", "fix": "", "next": ""}
        if level is None:
            return out

        head = (f"The {label} loss bottomed at {C.num(rise.best_loss, 3)} at step {int(rise.best_step)} "
                f"({best_frac:.0%} of the way) and rose {C.num(rise.rise, 3)} "
                f"(+{rise.rise_fraction:.0%}) to {C.num(rise.end_loss, 3)} by step {int(rise.last_step)}")
        trend = train.get("train_trend")
        conf = 0.6 + 0.25 * min(1.0, (rise.rise_fraction - o["min_rise_fraction"]) /
                                (3 * o["min_rise_fraction"]))
        fix = ("Keep the best checkpoint (load_best_model_at_end=True with metric_for_best_model, or "
               "EarlyStoppingCallback); then regularise: more or augmented data, fewer epochs, "
               "weight decay or dropout, a lower peak LR.")
        if trend == "rising":
            out.update(level="info", confidence=0.6, fix="See R203 training-instability.",
                       message=f"{head}, but the train loss rose too: not overfitting; the run "
                               "degraded as a whole (see R203).")
            out["summary"]["reading"] = "info"
            out["next"] = "None for R202; follow R203's next experiment."
            return out
        if trend == "falling":
            head += (f", while train loss fell from {train['train_loss_at_best']} to "
                     f"{train['train_end_loss']}")
        else:
            head += ("; the train loss " + ("was flat over that stretch" if trend == "flat"
                                            else "was not logged") + ", so it is not confirmed")
            level = "warning"
            conf = min(conf, 0.5)
        if metric.get("metric_trend") == "held":
            level = "warning"
            conf = min(conf, 0.5)
            head += (f"; {metric['metric']} did not fall ({metric['metric_at_best']} at the best step, "
                     f"{metric['metric_end']} at the end): over-confidence, not yet costing "
                     f"{metric['metric']}")
        elif metric.get("metric_trend") == "fell":
            conf += 0.05
            head += f"; {metric['metric']} fell from {metric['metric_at_best']} to {metric['metric_end']}"
        out["summary"]["reading"] = level
        out.update(level=level, confidence=round(min(conf, 0.95), 3), message=head + ".", fix=fix,
                   next=self._next(h, label, rise))
        return out

    @staticmethod
    def _train_around(ts: np.ndarray, tv: np.ndarray, best_step: float,
                      eval_steps: np.ndarray) -> dict[str, Any]:
        """Train loss near the best eval step vs at the end: falling, flat or rising."""
        if ts.size < 3:
            return {}
        gap = float(np.median(np.diff(eval_steps))) if eval_steps.size > 1 else 0.0
        near = tv[np.abs(ts - best_step) <= max(gap / 2, 1.0)]
        at_best = float(np.median(near)) if near.size else float(np.interp(best_step, ts, tv))
        end = C.end_level(tv)
        tol = max(C.noise_sigma(tv), 0.01 * abs(at_best))
        trend = "falling" if end < at_best - tol else "rising" if end > at_best + tol else "flat"
        if ts[-1] <= best_step:
            trend = "unknown"
        return {"train_loss_at_best": C.num(at_best), "train_end_loss": C.num(end), "train_trend": trend}

    @staticmethod
    def _metric(h, es: str, best_step: float) -> dict[str, Any]:
        """A higher-is-better eval metric at the best-loss step vs at the end."""
        names = [m for m in h.eval_metrics(es) if _HIGHER_IS_BETTER.search(m)]
        if not names:
            return {}
        name = min(names, key=lambda m: (0 if "accuracy" in m else 1, m))
        s, v = C.finite(*h.series(name, es))
        if s.size < 3:
            return {}
        at_best = float(v[int(np.argmin(np.abs(s - best_step)))])
        end = C.end_level(v)
        tol = max(C.noise_sigma(v), 0.005 * abs(at_best))
        trend = "fell" if end < at_best - tol else "held"
        return {"metric": name, "metric_at_best": C.num(at_best), "metric_end": C.num(end),
                "metric_trend": trend}

    @staticmethod
    def _next(h, label: str, rise: C.Rise) -> str:
        return (f"Evaluate the checkpoint nearest step {int(rise.best_step)} and the last one on a fresh "
                f"held-out sample (not the {label} set used for selection): if the early checkpoint "
                f"is better by more than the noise ({C.num(rise.noise, 2)}), overfitting is confirmed; "
                f"a tie says the rise was eval noise.")
