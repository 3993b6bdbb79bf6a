"""R201 loss-not-converged: training stopped while the loss was still falling."""
from __future__ import annotations

from typing import Any

import numpy as np

from degrade.check import Check, CheckSkipped
from degrade.checks.reachability import curves as C
from degrade.layers import Layer
from degrade.metric_direction import at_ceiling, direction
from degrade.option import Option
from degrade.run.history import eval_set_label


class LossNotConverged(Check):
    """Training stopped while the loss was still falling.

    What it detects: a loss curve that has not flattened by the last step. The tail of the curve
    (after the LR warmup and the first 10% of steps) is fitted with two saturating families,
    L(s) = E + A*s^-alpha (power law) and L(s) = E + A*exp(-s/tau), on four tail windows (the last
    30/50/70/100% of the fitted region); each fit is extrapolated to twice the steps. The median
    of the 8 projected gains is the estimate, their min-max its uncertainty. The eval loss decides
    when at least `min_points` evals lie in the fitted region (it is what the user cares about);
    otherwise the train loss does. Readings: `error` not converged, `warning` still improving,
    `info` still improving slowly, nothing when the curve has plateaued.

    Why it matters: a model that has not been trained to the end of its curve is not the model its
    architecture can give, so nothing inside the reachability layer (code, hypothesis) can be
    judged on it yet: the seed essay calls blaming I or P before R is settled "the biggest taboo".

    Evidence used: the train loss (`loss`), the main eval set's loss, the LR schedule (warmup end,
    LR at the end vs its peak), epoch numbers, and `global_step`/`max_steps` from trainer_state.
    The strength of the evidence is min(gain/current loss / min_gain_fraction, gain/total drop /
    min_drop_fraction), where total drop = first logged loss (the larger of the first train and
    first eval loss: before training both estimate the same thing) - fitted loss at the end:
      - error: strength >= 1, the fits agree (the lower quartile of the 8 projected gains reaches
        strength >= 0.5) and the last half of the fitted region clearly falls (rank trend test,
        p <= max_slope_p); or the run stopped before `unfinished_fraction` of its max_steps with
        the LR still above 10% of its peak while the curve still falls (strength >= 0.1, trend
        p <= `unfinished_slope_p`: the unfinished schedule is itself evidence);
      - error: the descent is accelerating: the last half of the fitted region falls at least
        `accelerate_factor` times as fast as the first half, clearly (trend p <= max_slope_p) and
        by more than 3 noise sigmas. Both fitted families saturate, so on a curve that is still
        entering its fall (a loss leaving its plateau at the initial value, ln 2 for a binary
        classifier) they understate the gain, and the strength rule above cannot fire;
      - warning: strength >= 0.5 (lower quartile >= 0.25) and falling;
      - info: strength >= 0.1 and falling ("still improving slowly"), or an unfinished schedule
        on a flat curve.
    The absolute criterion (gain vs total drop) keeps runs that converged near zero loss quiet:
    a 50% relative drop of a 0.002 loss is nothing against a 2.0 drop already achieved.
    When the eval loss has been rising since its minimum (R202's warning reading: the `rise_*`
    options), more steps would not help: the check says so as info and leaves the reading to R202
    overfitting.
    With train loss only, on a multi-epoch run, the fit starts after the last epoch boundary where
    the loss dropped step-like (the model re-seeing its data: memorisation, not learning).

    Never an error (a warning instead) when the projected gain is below the curve's own
    eval-to-eval noise (the next experiment could not confirm it), or when an accuracy-like eval
    metric already sits at its ceiling (more steps only sharpen confidence).

    Caveats: with the LR annealed to ~0, the end of the curve is flattened by the schedule; the
    projection then estimates what more steps at that LR would give, not what a longer schedule
    would (usually more). Logged HF train loss is a mean over `logging_steps`, which smooths but
    does not bias the tail fit.

    Fix: train longer (about 2x the steps, or more data/epochs) with the LR schedule stretched to
    the new length; if the run was cut before its own max_steps, resume it to the end.

    Loss-curve extrapolation by saturating fits: ANCHORS.md ("Scaling law with LR annealing",
    2024, fits L(s) = L0 + A*S1^-alpha - C*S2).
    """

    code, name, layer = "R201", "loss-not-converged", Layer.REACHABILITY
    needs = frozenset({"train_curve"})
    options = (
        Option("rise_max_best_fraction", 0.9, source="R202's warning reading (warning_max_best_fraction)",
               help="An eval minimum at or before this fraction of the run, then a rise: not "
                    "under-training (more steps would not help)."),
        Option("rise_sigmas", 3.0, source="R202's warning reading (three-sigma rule on the curve's noise)",
               help="The rise must exceed this many noise sigmas of the eval curve."),
        Option("rise_min_fraction", 0.02, source="R202's warning reading (2/5 of its 5% error rise)",
               help="The rise, as a fraction of the minimum."),
        Option("rise_trend_p", 0.05, source="R202's warning reading (warning_trend_p)",
               help="Mann-Kendall p of the rise after the minimum."),
        Option("min_gain_fraction", 0.10, source="ANCHORS.md: a < 5% window drop is 'not "
               "decreasing', so a projected 10% is clearly above a plateau",
               help="Projected gain from doubling the steps, as a fraction of the current loss, for "
               "strength 1."),
        Option("min_drop_fraction", 0.05, source="ANCHORS.md's 5% 'not decreasing' window drop, "
               "applied to the whole curve", help="The same gain as a fraction of the total drop "
               "achieved so far, for strength 1."),
        Option("max_slope_p", 0.01, source="Mann-Kendall trend test at alpha 0.01 (rank-based: heavy-"
               "tailed batch noise and single outliers do not make a trend)", help="One-sided p-value "
               "over the last half of the fitted region below which the curve clearly falls."),
        Option("skip_fraction", 0.10, source="design choice: the fast early fall and the warmup say "
               "nothing about the end", help="First fraction of the steps left out of the fits (the "
               "warmup end from the LR log also counts)."),
        Option("min_points", 5, source="design choice: a saturating fit has 3 parameters; 5 points "
               "leave 2 degrees of freedom", help="Points needed in the fitted region to fit a curve."),
        Option("unfinished_fraction", 0.9, source="design choice: the last 10% of a schedule with "
               "the LR decaying to 0 changes little", help="global_step below this fraction of "
               "max_steps means the run stopped before its own schedule's end."),
        Option("lr_still_high", 0.1, source="reading.py's 'annealed' bound: an LR under 10% of its "
               "peak has done its decay", help="With the LR at or above this share of its peak, an "
               "unfinished schedule has its decay still to come."),
        Option("min_strength", 0.1, source="design choice: a tenth of the not-converged bar is the "
               "least gain worth naming; an unfinished schedule is evidence of its own, so it "
               "suffices there", help="Strength of a still-improving-slowly note, and of the error on "
               "a run stopped before its schedule's end."),
        Option("unfinished_slope_p", 0.05, source="Mann-Kendall at conventional alpha 0.05, looser "
               "than max_slope_p because the unfinished schedule is independent evidence",
               help="Trend p-value needed for the unfinished-schedule error."),
        Option("warning_strength", 0.5, source="design choice: half the error bar", help="Strength "
               "(with the lower quartile at half of it) for a still-improving warning."),
        Option("accelerate_factor", 2.0, source="design choice: a saturating curve decelerates, so "
               "noise moves the late/early slope ratio around values below 1; twice as steep with a "
               "significant trend and a drop beyond 3 noise sigmas leaves only curves still speeding up",
               help="How much steeper the last half of the fitted region must fall than the first."),
    )

    def run(self, run):
        findings = self._read(run)
        blocker = self._not_material(run.history, findings)
        if blocker is None:
            return findings
        # A gain that the next experiment could not confirm, or one at a metric's ceiling, is not
        # an error (DESIGN.md §1: ceilings are never errors; an error's cost is beyond noise).
        return [self.finding("warning", f"{f.message} Not an error: {blocker}.", confidence=f.confidence,
                             evidence={**f.evidence, "not_an_error_because": blocker}, fix=f.fix,
                             next_experiment=f.next_experiment) if f.is_error else f for f in findings]

    @staticmethod
    def _not_material(h, findings) -> str | None:
        err = next((f for f in findings if f.is_error), None)
        if err is None:
            return None
        ev = err.evidence
        gain, noise = ev.get("projected_gain_2x"), ev.get("noise_sigma")
        if gain is not None and noise and gain < noise and not ev.get("accelerating_descent"):
            return (f"the projected gain ({gain}) is below the curve's own eval-to-eval noise ({noise}), "
                    "so no experiment of this length could confirm it")
        es = h.main_eval_set()
        if es is None:
            return None
        for name in h.eval_metrics(es):
            if direction(name) == 1:
                _, v = C.finite(*h.series(name, es))
                if v.size and at_ceiling(name, C.end_level(v)):
                    return (f"{name} is at its ceiling ({C.num(C.end_level(v), 4)}): more steps can only "
                            "sharpen the model's confidence, not its decisions")
        return None

    def _read(self, run):
        h = run.history
        o = self.opts
        start = C.fit_region_start(h, o["skip_fraction"])
        es = h.main_eval_set()
        ev: dict[str, Any] = {"fit_from_step": int(start), **C.lr_state(h)}
        schedule = self._schedule(h, ev)

        # 1. Eval rising since its minimum: more steps would not help; R202 reads it.
        if es is not None:
            rise = C.rise_after_min(*h.series("loss", es))
            if rise is not None and rise.rising(  # R202's warning reading
                    min_points=2, max_best_fraction=o["rise_max_best_fraction"], sigmas=o["rise_sigmas"],
                    min_fraction=o["rise_min_fraction"], trend_p=o["rise_trend_p"]):
                ev.update({"eval_set": eval_set_label(es), **rise.evidence()})
                return [self.finding(
                    "info", f"The {eval_set_label(es)} loss has risen {C.num(rise.rise, 3)} since its "
                    f"minimum at step {int(rise.best_step)}: more steps would not help, so this is "
                    "not read as under-training (see R202 overfitting).",
                    confidence=0.7, evidence=ev,
                    fix="See R202: stop at the best checkpoint or regularise.",
                    next_experiment="None for R201; follow R202's next experiment.")]

        # 2. Which curve decides: eval when it has enough points in the fitted region.
        curve = None
        if es is not None:
            s, v = C.finite(*h.series("loss", es))
            if int((s >= start).sum()) >= o["min_points"]:
                curve = ("eval", s, v, start)
        train_s, train_v = C.finite(*h.series("loss"))
        train_start = start
        drops = C.epoch_boundary_drops(h, train_s, train_v)
        late = [d for d in drops if d.step >= start]
        if late and int((train_s >= late[-1].step).sum()) >= 2 * o["min_points"]:
            train_start = late[-1].step  # fit within the last epoch: see the docstring
        if drops:
            ev["train_epoch_boundary_drops"] = [{"step": int(d.step), "epoch": d.epoch,
                                                 "drop": C.num(d.drop, 3)} for d in drops]
        if curve is None:
            if int((train_s >= train_start).sum()) < o["min_points"]:
                raise CheckSkipped(f"only {int((train_s >= start).sum())} training-loss point(s) after "
                                   f"step {int(start)} (warmup and first {o['skip_fraction']:.0%} of "
                                   f"steps left out); at least {o['min_points']} are needed to fit")
            curve = ("train", train_s, train_v, train_start)
        else:  # the train projection, for context
            tp = C.project_gain(train_s, train_v, train_start, o["min_points"])
            if tp is not None:
                ev["train_projected_gain_2x"] = C.num(tp.gain)
                ev["train_fitted_loss_at_end"] = C.num(tp.level)

        which, s, v, fit_from = curve
        label = eval_set_label(es) if which == "eval" else "train"
        proj = C.project_gain(s, v, fit_from, o["min_points"], end_step=float(s[-1]))
        assert proj is not None
        first = _drop_anchor(which, s, v, train_s, train_v)
        total_drop = first - proj.level
        sel = s >= fit_from
        fs, fv = s[sel], v[sel]
        half = max(o["min_points"], fs.size // 2)
        slope, _ = C.slope_t(fs[-half:], fv[-half:])
        p = C.trend_p(fs[-half:], fv[-half:], "down")
        noise = C.noise_sigma(fv)
        ev.update({"curve": label, "fit_from_step": int(fit_from), "points_fitted": int(fs.size),
                   "last_step": int(s[-1]), "first_loss": C.num(first), **proj.evidence(),
                   "total_drop": C.num(total_drop), "recent_slope_per_1k_steps": C.num(slope * 1000),
                   "recent_trend_p": C.num(p, 3),
                   "noise_sigma": C.num(noise)})
        if total_drop <= 0:
            return []  # never fell: a not-decreasing check's business, not "still falling"
        gain = max(proj.gain, 0.0)
        rel_cur = gain / abs(proj.level) if proj.level else float("inf")
        rel_drop = gain / total_drop

        def strength_of(g: float) -> float:
            g = max(g, 0.0)
            cur = g / abs(proj.level) if proj.level else float("inf")
            return min(cur / o["min_gain_fraction"], g / total_drop / o["min_drop_fraction"])

        strength, strength_q25 = strength_of(proj.gain), strength_of(proj.gain_q25)
        ev.update({"gain_over_current_loss": C.num(rel_cur, 3), "gain_over_total_drop": C.num(rel_drop, 3),
                   "strength": C.num(strength, 3), "strength_q25": C.num(strength_q25, 3)})
        falling = p <= o["max_slope_p"]
        unfinished = schedule is not None

        where = f"the {label} loss"
        pct = f"{rel_cur:.0%} of the current {C.num(proj.level, 3)}"
        rng = f"{C.num(proj.gain_low, 2)}-{C.num(proj.gain_high, 2)}"
        core = (f"{where} is still falling at step {int(s[-1])}: doubling the steps is projected to "
                f"lower it by {C.num(gain, 2)} (range {rng} over {proj.n_fits} fits), {pct}")
        base = core[0].upper() + core[1:]
        note = ""
        if which == "train" and fit_from > start:
            d = late[-1]
            note = (f" Fitted within the last epoch: the loss dropped {C.num(d.drop, 2)} when epoch "
                    f"{d.epoch} began (step {int(d.step)}), the model re-seeing its data.")
        nxt = self._next_experiment(run, which, label, s, proj, noise)
        fix = ("Train longer: about 2x the steps (or more data/epochs), with the LR schedule "
               "stretched to the new length rather than restarted at its peak.")
        if falling and strength >= 1 and strength_q25 >= 0.5:
            conf = 0.55 + 0.25 * min(1.0, (strength - 1) / 2)
            conf += 0.1 if which == "eval" else 0.0
            conf += 0.05 if strength_q25 >= 1 else 0.0
            msg = base + f" and {rel_drop:.0%} of the {C.num(total_drop, 3)} drop so far."
            if unfinished:
                msg += f" The run also stopped at {schedule:.0%} of its max_steps."
            msg += note
            return [self.finding("error", msg, confidence=min(conf, 0.95), evidence=ev, fix=fix,
                                 next_experiment=nxt)]
        if unfinished and p <= o["unfinished_slope_p"] and strength >= o["min_strength"]:
            msg = (f"The run stopped at {schedule:.0%} of its max_steps ({ev['global_step']} of "
                   f"{ev['max_steps']})" + (f" with the LR still at {ev['lr_end_over_peak']:.0%} of "
                                           "its peak" if ev.get("lr_end_over_peak") is not None else "")
                   + f", and {core}. If this log is a snapshot of a run that went on, diagnose the "
                   "run's final output_dir instead." + note)
            return [self.finding("error", msg, confidence=0.7 if which == "eval" else 0.6, evidence=ev,
                                 fix="Resume from the last checkpoint and finish the planned schedule "
                                     "(the LR decay still to come usually lowers the loss further).",
                                 next_experiment=nxt)]
        accel = self._accelerating(fs, fv, half, noise)
        if falling and accel is not None:
            ev["accelerating_descent"] = accel
            msg = (f"The {label} loss falls faster at the end than before: "
                   f"{accel['slope_last_half_per_1k']} per 1k steps over the last half of the fitted "
                   f"region vs {accel['slope_first_half_per_1k']} over the first half. The run stopped "
                   f"in the middle of its descent, where a saturating fit (projected "
                   f"{C.num(gain, 2)} from doubling the steps) understates what more steps give." + note)
            return [self.finding("error", msg, confidence=0.7 if which == "eval" else 0.6, evidence=ev,
                                 fix=fix, next_experiment=nxt)]
        if falling and strength >= o["warning_strength"] and strength_q25 >= o["warning_strength"] / 2:
            return [self.finding("warning", f"{base}: still improving, below the not-converged bar.{note}",
                                 confidence=0.5, evidence=ev, fix=fix, next_experiment=nxt)]
        if falling and strength >= o["min_strength"]:
            return [self.finding("info", f"The {label} loss is still improving slowly at the end "
                                 f"(projected {C.num(gain, 2)} from doubling the steps, {pct}).",
                                 confidence=0.5, evidence=ev,
                                 fix="None needed; longer training would give little.",
                                 next_experiment=nxt)]
        if unfinished:
            return [self.finding("info", f"The run stopped at {schedule:.0%} of its max_steps; the "
                                 f"{label} loss had flattened by then.", confidence=0.5, evidence=ev,
                                 fix="None needed unless the LR decay still to come matters: resume "
                                     "to the end of the schedule to find out.",
                                 next_experiment=nxt)]
        return []

    def _schedule(self, h, ev: dict[str, Any]) -> float | None:
        """The fraction of max_steps done, when the run stopped early with the LR still high."""
        gs, ms = h.meta.get("global_step"), h.meta.get("max_steps")
        if not (isinstance(gs, (int, float)) and isinstance(ms, (int, float)) and ms > 0 and gs > 0):
            return None
        frac = gs / ms
        ev.update({"global_step": int(gs), "max_steps": int(ms), "schedule_done": C.num(frac, 3)})
        lr_ratio = ev.get("lr_end_over_peak")
        if frac < self.opts["unfinished_fraction"] and (lr_ratio is None or lr_ratio >= self.opts["lr_still_high"]):
            return frac
        return None

    def _accelerating(self, fs: np.ndarray, fv: np.ndarray, half: int, noise: float) -> dict | None:
        """The fitted region's last half falls accelerate_factor x faster than its first half, by
        more than 3 noise sigmas: a curve still entering its fall (see the docstring)."""
        if fs.size < half + 3:  # the first part needs 4 points of its own (it shares one)
            return None
        first, _ = C.slope_t(fs[:fs.size - half + 1], fv[:fs.size - half + 1])
        last, _ = C.slope_t(fs[-half:], fv[-half:])
        drop = float(fv[-half] - fv[-1])
        if not (last < 0 and last <= self.opts["accelerate_factor"] * min(first, 0.0) - 1e-12
                and drop >= 3 * noise):
            return None
        return {"slope_first_half_per_1k": C.num(first * 1000), "slope_last_half_per_1k": C.num(last * 1000),
                "drop_last_half": C.num(drop), "noise_sigma": C.num(noise)}

    @staticmethod
    def _next_experiment(run, which: str, label: str, steps: np.ndarray, proj: C.Projection,
                         noise: float) -> str:
        last = int(steps[-1])
        more = max(int(round(last * 0.5)), 1)
        ckpt = "the last checkpoint"
        if run.checkpoints:  # the final weights may sit at the run dir's root, not in checkpoint-N/
            path = run.checkpoints[-1].path
            ckpt = path.name if path != run.path else f"the final weights in {path}"
        predict = (f"the fit predicts about {C.num(proj.level - proj.gain_half, 3)} (now "
                   f"{C.num(proj.level, 3)}); a drop within the noise ({C.num(noise, 2)}) refutes "
                   f"this reading")
        if which == "eval":
            return f"Resume from {ckpt} for {more} more steps (to 1.5x) and log the {label} loss: {predict}."
        return (f"Hold out 1-5% of the training data as an eval set and resume from {ckpt} for {more} "
                f"more steps (to 1.5x), evaluating every {max(more // 5, 1)} steps: held-out loss still "
                f"falling confirms under-training, flat held-out loss says the train-loss fall is "
                f"memorisation. On the train loss, {predict}.")


def _drop_anchor(which: str, s: np.ndarray, v: np.ndarray, train_s: np.ndarray,
                 train_v: np.ndarray) -> float:
    """Where the total drop is measured from, on a quantity comparable with the curve's end.

    The eval curve starts at its own first value, or at the train loss logged by the time of the
    first eval when that is higher (an eval curve first logged after the fast early fall: before
    training both estimate the same loss). Never at a train log from long before the first eval:
    the first logs of a fine-tune (a loss of 25 at step 10 against an eval curve starting at 3.4)
    would make every later gain look immaterial. The train curve starts at its own first value.
    """
    if which != "eval":
        return float(v[0])
    before = train_v[train_s <= s[0]][-3:]
    return max(float(v[0]), float(np.median(before)) if before.size else -np.inf)

