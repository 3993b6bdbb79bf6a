"""R202 overfitting: eval loss rising since an early minimum while the train loss keeps falling."""
from __future__ import annotations

from typing import Any

import numpy as np

from degrade.check import Check
from degrade.checks.reachability import curves as C
from degrade.layers import Layer
from degrade.metric_direction import at_ceiling, direction
from degrade.option import Option
from degrade.run.history import eval_set_label


class Overfitting(Check):
    """The eval loss reached its minimum well before the end and has risen since, while the train
    loss kept falling.

    What it detects: the U-shaped eval curve of overfitting (UMLAUT's heuristic: eval loss rising
    while train loss falls; the best checkpoint well before the last). The best step is the minimum
    of a 3-point rolling median of the main eval set's loss (one lucky evaluation is not a best
    step); the end level is the median of the last 3 evals. The rise counts when it is a trend
    (Mann-Kendall p <= `trend_p` after the minimum) or a level shift (the loss jumped and stayed: at
    least `shift_share` of >= 3 evals after the minimum lie above it by 3 noise sigmas; a rank
    trend test misses a jump followed by a plateau).
      - error: the best step is at most `max_best_fraction` of the way through, the eval loss has
        risen by at least `min_rise_fraction` of its minimum and by `min_rise_sigmas` times the
        curve's point-to-point noise, as a trend or a level shift, with at least
        `min_evals_after_best` evals after the minimum, and the train loss fell over the same
        stretch;
      - warning: a smaller rise (>= `warning_rise_share` of min_rise_fraction, trend p <=
        `warning_trend_p`, best step by `warning_max_best_fraction`), a rise with no train
        loss to confirm it; or a rise of the loss while the task metric (the first eval metric
        whose direction its name tells: accuracy, F1, WER, CER, perplexity ...) is shown to still
        improve over the last `metric_tail_fraction` of the run (Mann-Kendall p <= 0.05 over at
        least 4 evals) or sits at its ceiling (accuracy 1.0): over-confidence, the decisions are
        not (yet) worse. The burden of proof is on the demotion: a metric that merely did not get
        worse, or has too few evals to show a trend, leaves the error standing;
      - info: the eval and train losses rose together (not overfitting: see R203 instability).
    Other eval sets are read the same way; when only a secondary set overfits, a warning names it.

    Why it matters: past the minimum, every further step makes the model worse on new data; the
    last checkpoint is not the best one the run produced. Training reached what the model can do
    on the train set, but not a model that generalises.

    Evidence used: the loss of each eval set, the train loss around the best step and at the end,
    the task metric at the best step, at the end and its trend over the run's last part, the
    train/eval gap at the end, trainer_state's best_model_checkpoint.

    A failure concentrated along one axis (position, length, ...) is the ladder's to weigh
    (degrade/axes.py): this finding stands unless the axis shows the model at its training level
    off the axis.

    Fix: keep the best checkpoint (load_best_model_at_end=True with metric_for_best_model, or
    EarlyStoppingCallback); then regularise: more or augmented data, fewer epochs, weight
    decay/dropout, a lower peak LR.
    """

    code, name, layer = "R202", "overfitting", Layer.REACHABILITY
    needs = frozenset({"eval_curve"})
    options = (
        Option("max_best_fraction", 0.8, source="UMLAUT (CHI 2021) via ANCHORS.md: the best "
               "checkpoint well before the last", help="The best step must lie at or before this "
               "fraction of the last eval step for an error."),
        Option("min_rise_fraction", 0.05, source="ANCHORS.md: a < 5% window drop is 'not "
               "decreasing'; the same size counts as a rise", help="Eval-loss rise since the "
               "minimum, as a fraction of it, for an error."),
        Option("min_rise_sigmas", 3.0, source="three-sigma rule on the curve's own point-to-point "
               "noise (MAD of first differences)", help="The rise must also exceed this many times "
               "the curve's noise, so a noisy eval curve does not read as a rise."),
        Option("min_evals_after_best", 2, source="design choice: one eval after the minimum is a "
               "point, two start a trend", help="Evals needed after the minimum to call it a trend."),
        Option("shift_share", 0.8, source="noise bound: a point lies above the rolling-median "
               "minimum + 3 sigma by chance with p <= 0.023, so 80% of >= 3 such points has p < 1e-4",
               help="Share of the evals after the minimum lying above it by 3 noise sigmas that "
               "makes a level shift."),
        Option("trend_p", 0.01, source="statistical convention: a one-sided rank-trend p of 1%, strict "
               "because one run's curve is read once per eval set", help="Mann-Kendall p after the "
               "minimum at or below which the rise is a trend (error)."),
        Option("warning_trend_p", 0.05, source="statistical convention: the usual 5% level, for a "
               "warning only", help="Trend p for the smaller rise that is a warning."),
        Option("warning_rise_share", 0.4, source="design choice: 2/5 of min_rise_fraction (a 2% rise "
               "at the default), the size below which a rise is not worth a line",
               help="A warning's rise, as a share of min_rise_fraction."),
        Option("warning_max_best_fraction", 0.9, source="design choice: a best step in the last tenth "
               "of the run leaves one or two evals after it, too few to call a rise",
               help="The best step must lie at or before this fraction of the last eval step for a "
               "warning."),
        Option("metric_tail_fraction", 0.4, source="design choice: the last 40% of the run is the "
               "stretch an early-stopping patience of a few evals would watch",
               help="The part of the run over which the task metric must still improve to demote "
               "the error to a warning."),
    )

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
                return [self.finding("info", main_r["message"], confidence=0.5, evidence=ev,
                                     fix="None needed.", next_experiment=main_r["next"])] \
                    if main_r["message"] else []
            level, conf = "warning", 0.5
            names = ", ".join(eval_set_label(es) for es in bad)
            msg = (f"The main eval set ({eval_set_label(main)}) does not overfit, but {names} "
                   f"{'does' if len(bad) == 1 else 'do'}: {readings[bad[0]]['message']}")
            fix, nxt = readings[bad[0]]["fix"], readings[bad[0]]["next"]
        elif others:
            rose = sum(s["reading"] in ("error", "warning") for s in others.values())
            msg += f" {rose} of {len(others)} other eval set(s) rose the same way."

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
        rising = rise.trend_p <= o["trend_p"] or rise.level_shift(3, o["shift_share"])
        if significant and enough and rising and best_frac <= o["max_best_fraction"] \
                and rise.rise_fraction >= o["min_rise_fraction"]:
            level = "error"
        elif rise.rising(min_points=o["min_evals_after_best"], max_best_fraction=o["warning_max_best_fraction"],
                         sigmas=o["min_rise_sigmas"], min_fraction=o["warning_rise_share"] * o["min_rise_fraction"],
                         trend_p=o["warning_trend_p"]):
            level = "warning"
        summary = {"reading": level or "clean", "best_step": int(rise.best_step),
                   "rise_fraction": C.num(rise.rise_fraction, 3)}
        out: dict[str, Any] = {"level": level, "evidence": ev, "summary": summary,
                               "confidence": 0.0, "message": "", "fix": "", "next": ""}
        if level is None:
            if rise.rise_fraction >= o["min_rise_fraction"] and enough:  # say why it is not a rise
                out["message"] = (
                    f"The {label} loss ended {C.num(rise.rise, 3)} (+{rise.rise_fraction:.0%}) above its "
                    f"minimum at step {int(rise.best_step)}, but that is {rise.rise / rise.noise:.1f} times "
                    f"its point-to-point noise ({C.num(rise.noise, 3)}) with no clear trend (p "
                    f"{C.num(rise.trend_p, 2)}): not read as overfitting." if rise.noise > 0 else
                    f"The {label} loss ended {C.num(rise.rise, 3)} above its minimum with no clear trend: "
                    "not read as overfitting.")
                out["next"] = self._next(h, label, rise)
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
        state, m = metric.get("metric_trend"), metric.get("metric")
        if state in ("improving", "ceiling"):
            level = "warning"
            conf = min(conf, 0.5)
            why = ("is still improving over the run's last part" if state == "improving"
                   else "is at its ceiling")
            head += (f"; {m} {why} ({metric['metric_at_best']} at the best-loss step, "
                     f"{metric['metric_end']} at the end): over-confidence, not yet costing {m}")
        elif state == "worsened":
            conf += 0.05
            head += f"; {m} worsened from {metric['metric_at_best']} to {metric['metric_end']}"
        elif state == "stalled":
            head += (f"; {m} was {metric['metric_at_best']} at the best-loss step and "
                     f"{metric['metric_end']} at the end, with no measurable improvement over the last "
                     f"{o['metric_tail_fraction']:.0%} of the run")
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

    def _metric(self, h, es: str, best_step: float) -> dict[str, Any]:
        """The task metric at the best-loss step vs at the end: worsened, still improving over the
        run's last part, at its ceiling, or stalled (none of those shown)."""
        names = [m for m in h.eval_metrics(es) if direction(m) is not None and not m.endswith("loss")]
        if not names:
            return {}
        name = min(names, key=lambda m: (0 if "accuracy" in m else 1, m))
        sign = direction(name)
        s, v = C.finite(*h.series(name, es))
        if s.size < 3:
            return {}
        at_best = float(v[int(np.argmin(np.abs(s - best_step)))])
        end = C.end_level(v)
        tol = max(C.noise_sigma(v), 0.005 * abs(at_best))
        tail = s >= s[-1] - self.opts["metric_tail_fraction"] * (s[-1] - s[0])
        improving = int(tail.sum()) >= 4 and C.trend_p(s[tail], v[tail], "up" if sign > 0 else "down") <= 0.05
        if sign * (end - at_best) < -tol:
            state = "worsened"
        elif sign > 0 and at_ceiling(name, end):
            state = "ceiling"
        else:
            state = "improving" if improving else "stalled"
        return {"metric": name, "metric_at_best": C.num(at_best), "metric_end": C.num(end),
                "metric_trend": state, "metric_higher_is_better": sign > 0}

    @staticmethod
    def _next(h, label: str, rise: C.Rise) -> str:
        return (f"Evaluate the checkpoint nearest step {int(rise.best_step)} and the last one on a fresh "
                f"held-out sample (not the {label} set used for selection): if the early checkpoint "
                f"is better by more than the noise ({C.num(rise.noise, 2)}), overfitting is confirmed; "
                f"a tie says the rise was eval noise.")
