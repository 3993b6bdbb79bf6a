"""R203 training-instability: NaN/Inf, loss spikes, divergence, exploding gradient norms."""
from __future__ import annotations

from typing import Any

import numpy as np

from degrade.check import Check, CheckSkipped
from degrade.checks.reachability import curves as C
from degrade.layers import Layer
from degrade.option import Option
from degrade.run.history import eval_set_label


class TrainingInstability(Check):
    """The optimisation was numerically unstable: NaN/Inf, loss spikes, divergence, or exploding
    gradient norms.

    What it detects, from the logged history:
      - non-finite values: NaN/Inf in the train loss or an eval loss (error), or in grad_norm while
        the loss stayed finite (warning: with fp16 dynamic loss scaling, overflowing steps are
        skipped and logged as inf/NaN grad norms, which is harmless when rare);
      - divergence: the loss level at the end (median of the last k points, k ~ 10% of the curve,
        5 to 25) is >= `diverge_factor` times the minimum reached (minimum of a k-point rolling
        median; for a minimum <= 0, the end gives back `diverge_share_of_drop` of the earlier
        drop), the rise is >= `min_rise_share_of_drop` of the drop achieved before it and >=
        `min_rise_sigmas` noise sigmas / sqrt k, and the points since the minimum trend up
        (Mann-Kendall p <= `climb_trend_p`) (error);
      - loss spikes: a point whose robust z-score against the rolling median of the preceding
        `window` points (scale: 1.4826 x MAD of the curve's first differences / sqrt 2; on the
        log of the loss when it is positive, since per-example losses are right-skewed) is
        >= `spike_z`, and whose jump is >= `spike_min_jump` of that median and >= 2% of the
        total drop (so a converged near-zero loss doubling is not a spike). Spikes that came back
        into the noise band are a warning; one still unresolved at the end is a warning too (the
        divergence test speaks when the level stays up);
      - a run that went backwards: the main eval loss was lowest among its first evals (rank
        chance k/n <= `first_best_p`) or jumped up from an early minimum and stayed, and ended
        `worse_fraction` above it, while the train loss ended `worse_fraction` above its first log
        (error). This needs only 2 train logs, so it reads runs that log rarely;
      - grad-norm explosions: a grad norm >= `grad_explosion_factor` times the rolling median of
        the preceding points after the warmup and at least the norm the run trained at (the highest
        rolling-median level after warmup, so a blip after a loss memorised to ~0 is not an
        explosion), or a median grad norm over the last 20%
        of steps that many times the one after warmup; grad norms exactly 0 on
        `zero_grad_share` of the logged steps after warmup (warning).

    Why it matters: an unstable run did not reach what its model can do: the weights at the end
    are a casualty of the optimiser, not the product of the data. NaNs poison every later step.

    Evidence used: train loss, grad_norm, every eval set's loss, the LR log (warmup end).

    Fix: lower the peak LR or lengthen its warmup; clip gradients (max_grad_norm=1.0); use bf16
    rather than fp16 (or a larger loss-scale window); look for bad batches at the spike steps
    (empty or very long sequences, label errors); for attention-logit growth, QK-norm or
    softmax capping.

    """

    code, name, layer = "R203", "training-instability", Layer.REACHABILITY
    needs = frozenset({"history"})
    options = (
        Option("diverge_factor", 2.0, source="ANCHORS.md: 'Loss diverging: >= 2x the minimum reached'",
               help="Final loss >= this times the minimum reached is divergence."),
        Option("spike_z", 6.0, source="design choice, no published threshold: 6 robust sigmas keeps "
               "heavy-tailed but healthy noisy curves (batch-size-1 fine-tunes) quiet",
               help="Robust z-score of a loss spike against the rolling median of the points before."),
        Option("spike_min_jump", 0.25, source="design choice: a spike must be visible on the loss "
               "itself, a quarter above its local level", help="The spike must also exceed the local "
               "median by this fraction."),
        Option("window", 10, source="design choice: the rolling median of ten logs, long enough to "
               "ignore one outlier, short enough to follow the curve", help="Points of the rolling "
               "median a spike or a grad norm is measured against."),
        Option("grad_explosion_factor", 10.0, source="AUTOTRAINER flags exploding gradients at a "
               "norm ratio > 70 (ANCHORS.md); across time with clipping on, 10x is far outside the "
               "2-5x fluctuation of healthy real logs (shared/real-runs)", help="A grad norm this many "
               "times its rolling median, and at least the grad norm the run trained at (its highest rolling-median level after warmup), is an explosion."),
        Option("worse_fraction", 0.05, source="ANCHORS.md: a < 5% window drop is 'not decreasing'; "
               "the same size counts as ending worse", help="How far above their best (eval) and "
               "first (train) values both curves must end to read as a run that went backwards."),
        Option("first_best_p", 0.05, source="conventional alpha 0.05 for the rank probability k/n "
               "that the lowest of n exchangeable evals falls among the first k",
               help="Chance level below which an eval minimum this early is not luck."),
        Option("diverge_share_of_drop", 0.5, source="design choice: a loss whose minimum is <= 0 has "
               "no ratio; giving back half of the fall before it is the ratio rule's analogue",
               help="For a minimum <= 0: the end must lie this share of the earlier drop above it."),
        Option("min_rise_share_of_drop", 0.1, source="design choice: a rise under a tenth of the fall "
               "before it does not undo training", help="The climb since the minimum must be at "
               "least this share of the drop before it."),
        Option("min_rise_sigmas", 8.0, source="noise bound: both levels are medians of about k points "
               "(SE ~1.25 sigma / sqrt k each) and the minimum is the lowest of many windows; 8 sigma / "
               "sqrt k is ~4.5 SE of their difference", help="The climb must exceed this many noise "
               "sigmas / sqrt(k) (k: the rolling-median window)."),
        Option("climb_trend_p", 0.01, source="statistical convention: a one-sided rank-trend p of 1%, "
               "so a noisy curve's lucky low stretch is not read as a climb",
               help="Mann-Kendall p of the climb after the minimum for a divergence."),
        Option("zero_grad_share", 0.1, source="TheDeepChecker (ANCHORS.md): an update exactly 0 means "
               "an untrained parameter; one step in ten is far beyond skipped fp16 steps",
               help="Share of logged grad norms after warmup that are exactly 0 for a warning."),
    )

    def run(self, run):
        h = run.history
        findings = []
        findings += self._non_finite(h)
        steps, loss = h.series("loss")
        fs, fv = C.finite(steps, loss)
        findings += self._got_worse(h, fs, fv)
        if fs.size < 5 and not findings:
            raise CheckSkipped(f"the history has {fs.size} finite training-loss point(s); at least 5 "
                               "are needed to look for spikes and divergence")
        if fs.size >= 5 and not any(f.evidence.get("reading") == "got-worse" for f in findings):
            div = self._divergence(fs, fv)
            findings += div
            if not div:
                findings += self._spikes(fs, fv)
        findings += self._grad_norm(h)
        return findings

    # ---- NaN / Inf ---------------------------------------------------------------------------
    def _non_finite(self, h) -> list:
        out = []
        s, v = h.series("loss")
        bad = ~np.isfinite(v)
        if bad.any():
            first = int(s[bad][0])
            recovered = bool(np.isfinite(v[np.argmax(bad):]).any() and np.isfinite(v[-1]))
            ev = {"series": "train loss", "non_finite_points": int(bad.sum()), "points": int(v.size),
                  "first_step": first, "last_value_finite": bool(np.isfinite(v[-1])),
                  "recovered": recovered}
            ev.update(self._context_before(h, first))
            out.append(self.finding(
                "error", f"The train loss became {'NaN' if np.isnan(v[bad][0]) else 'Inf'} at step "
                f"{first} ({int(bad.sum())} of {v.size} logged points non-finite"
                f"{'; finite again later' if recovered else ', never recovered'}).",
                confidence=0.95, evidence=ev, fix=self._fix(),
                next_experiment=f"Resume from the last checkpoint before step {first} with anomaly "
                                "detection on (torch.autograd.set_detect_anomaly) and the loss logged "
                                "every step: the first non-finite op names the culprit; with the LR "
                                "halved, a clean run past that step confirms an LR/precision blow-up."))
        for es in h.eval_sets:
            s, v = h.series("loss", es)
            bad = ~np.isfinite(v)
            if bad.any():
                out.append(self.finding(
                    "error", f"The {eval_set_label(es)} loss is non-finite at step {int(s[bad][0])} "
                    f"({int(bad.sum())} of {v.size} evals).", confidence=0.9,
                    evidence={"series": f"{eval_set_label(es)} loss", "non_finite_points": int(bad.sum()),
                              "first_step": int(s[bad][0])}, fix=self._fix(),
                    next_experiment="Evaluate that checkpoint in fp32 on a few eval batches: a finite "
                                    "loss there points at precision overflow, a NaN at the weights."))
        s, g = h.series("grad_norm")
        _, lv = h.series("loss")
        bad = ~np.isfinite(g)
        if bad.any() and not (~np.isfinite(lv)).any():
            frac = bad.sum() / g.size
            out.append(self.finding(
                "warning", f"grad_norm was NaN/Inf at {int(bad.sum())} of {g.size} logged steps "
                f"(first at step {int(s[bad][0])}) while the loss stayed finite: usually fp16 loss "
                "scaling skipping overflowing steps" + ("; this often, updates are being lost."
                                                        if frac > 0.05 else "."),
                confidence=0.6 if frac > 0.05 else 0.4,
                evidence={"series": "grad_norm", "non_finite_points": int(bad.sum()),
                          "points": int(g.size), "first_step": int(s[bad][0]),
                          "fraction": C.num(frac, 3)},
                fix="Use bf16 instead of fp16, or lower the LR; check that skipped steps are rare.",
                next_experiment="Log the loss scale (GradScaler.get_scale()) every step: a scale "
                                "that keeps halving confirms overflow."))
        return out

    @staticmethod
    def _context_before(h, step: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("loss", "grad_norm", "learning_rate"):
            s, v = C.finite(*h.series(key))
            before = v[s < step]
            if before.size:
                out[f"{key}_before"] = C.num(before[-1])
        return out

    # ---- divergence --------------------------------------------------------------------------
    def _divergence(self, s: np.ndarray, v: np.ndarray) -> list:
        # Levels, not points: the minimum of a rolling median and the median of the last k points,
        # k ~ 10% of the curve, so that a lucky low point on a noisy curve is not "the minimum".
        k = max(5, min(25, v.size // 10))
        level = C.rolling_median(v, k)
        i = int(np.argmin(level[1:])) + 1 if v.size > 1 else 0
        low = float(level[i])
        end = float(np.median(v[-k:]))
        start = float(np.max(v[:max(1, i)])) if i > 0 else float(v[0])
        drop = start - low
        rise = end - low
        if low > 0:
            diverged = end >= self.opts["diverge_factor"] * low
        else:
            diverged = drop > 0 and rise >= self.opts["diverge_share_of_drop"] * drop
        if not (diverged and drop > 0 and rise >= self.opts["min_rise_share_of_drop"] * drop
                and rise >= self.opts["min_rise_sigmas"] * C.noise_sigma(v) / np.sqrt(k) and i < v.size - k):
            return []
        trend = C.trend_p(s[i:], v[i:], "up")
        if trend > self.opts["climb_trend_p"]:
            return []
        ev = {"min_loss": C.num(low), "min_step": int(s[i]), "end_loss": C.num(end),
              "last_step": int(s[-1]), "end_over_min": C.num(end / low, 3) if low > 0 else None,
              "rise": C.num(rise), "drop_before_min": C.num(drop), "rise_trend_p": C.num(trend, 3)}
        return [self.finding(
            "error", f"The train loss diverged: it reached {C.num(low, 3)} at step {int(s[i])} and "
                     f"ended at {C.num(end, 3)} (x{end / low:.1f} the minimum)." if low > 0 else
                     f"The train loss diverged: it reached {C.num(low, 3)} at step {int(s[i])} and "
                     f"ended at {C.num(end, 3)}, giving back {rise / drop:.0%} of its drop.",
            confidence=0.85, evidence=ev, fix=self._fix(),
            next_experiment=f"Resume from the checkpoint nearest step {int(s[i])} with the peak LR "
                            "halved (or the same LR with gradient clipping at 1.0): a loss that keeps "
                            "falling past that step confirms an optimiser instability.")]

    # ---- both curves ended worse than they started ------------------------------------------
    def _got_worse(self, h, ts: np.ndarray, tv: np.ndarray) -> list:
        """The main eval loss was best at the start and the train loss ended above its first log.

        With few train logs (a Whisper fine-tune logging every 500 steps has 5), the rolling
        levels of the divergence test cannot be formed; two curves that both went backwards are
        evidence of their own. Eval: the lowest eval loss is among the first k of n evals, which
        happens by chance with probability k/n when the evals are exchangeable (no change), or the
        curve jumped up from its minimum and stayed (a level shift, curves.Rise); the end is
        `worse_fraction` above the minimum. Train: the end level is `worse_fraction` above the
        first logged value (and 3 noise sigmas when there are >= 10 points). A healthy run's train
        loss ends far below its first log, and an overfitting one's falls (R202), so neither
        reads this way.
        """
        es = h.main_eval_set()
        if es is None or tv.size < 2:
            return []
        s, v = C.finite(*h.series("loss", es))
        if v.size < 5:
            return []
        f = self.opts["worse_fraction"]
        i = int(np.argmin(v))
        p_first = (i + 1) / v.size
        rise = C.rise_after_min(s, v)
        shifted = rise is not None and rise.level_shift() and rise.best_step <= s[0] + 0.2 * (s[-1] - s[0])
        eval_end = C.end_level(v)
        train_first, train_end = float(tv[0]), C.end_level(tv)
        # With fewer than 10 points the point-to-point noise estimate is mostly the trend itself.
        sigma = C.noise_sigma(tv) if tv.size >= 10 else 0.0
        eval_worse = (p_first <= self.opts["first_best_p"] or shifted) and v[i] > 0 \
            and eval_end >= (1 + f) * float(v[i])
        train_worse = train_first > 0 and train_end >= (1 + f) * train_first \
            and train_end - train_first >= 3 * sigma
        if not (eval_worse and train_worse):
            return []
        label = eval_set_label(es)
        ev = {"reading": "got-worse", "eval_set": label, "eval_best": C.num(v[i]),
              "eval_best_step": int(s[i]), "eval_best_rank_p": C.num(p_first, 3), "evals": int(v.size),
              "eval_end": C.num(eval_end), "train_first": C.num(train_first),
              "train_first_step": int(ts[0]), "train_end": C.num(train_end), **C.lr_state(h)}
        return [self.finding(
            "error", f"The run went backwards: the {label} loss was lowest at step {int(s[i])} "
            f"({C.num(v[i], 3)}, eval {i + 1} of {v.size}) and ended at {C.num(eval_end, 3)} "
            f"(+{eval_end / v[i] - 1:.0%}), and the train loss ended at {C.num(train_end, 3)}, "
            f"{train_end / train_first - 1:+.0%} from its first log ({C.num(train_first, 3)} at step "
            f"{int(ts[0])}). Training made the model worse than it was early on: the optimiser "
            "diverged (usually a peak LR far too high).",
            confidence=0.8, evidence=ev, fix=self._fix(),
            next_experiment=f"Rerun with the peak LR divided by 10 (or by 3 with twice the warmup), "
                            f"evaluating as often: an eval loss that keeps falling past step {int(s[i])} "
                            "confirms the LR as the cause.")]

    # ---- spikes ------------------------------------------------------------------------------
    def _spikes(self, s: np.ndarray, v: np.ndarray) -> list:
        """Spikes on the log scale when the loss is positive: per-example losses are right-skewed
        (a batch-of-1 loss is roughly exponential), and their logs are not, so a heavy but healthy
        right tail does not read as spikes; the size tests stay on the loss itself."""
        o = self.opts
        w = int(o["window"])
        x = np.log(v) if v.min() > 0 else v
        sigma = C.noise_sigma(x)
        sigma_v = C.noise_sigma(v)
        total_drop = float(v[0] - np.min(v))
        med_v = C.trailing_median(v, w)
        med_x = C.trailing_median(x, w)
        jump = v - med_v
        z = (x - med_x) / sigma if sigma > 0 else np.zeros_like(x)
        idx = np.arange(v.size)
        with np.errstate(invalid="ignore"):
            hit = (idx >= 3) & (jump > 0) & (z >= o["spike_z"]) \
                & (jump >= o["spike_min_jump"] * np.abs(med_v)) & (jump >= 0.02 * max(total_drop, 0.0))
        spikes = []
        for i in np.flatnonzero(hit):
            med = float(med_v[i])
            back = np.flatnonzero(v[i + 1:] <= med + max(3 * sigma_v, 0.1 * float(jump[i])))
            spikes.append({"step": int(s[i]), "loss": C.num(v[i]), "local_median": C.num(med),
                           "robust_z": C.num(z[i], 3),
                           "recovered_after_points": int(back[0]) + 1 if back.size else None})
        if not spikes:
            return []
        # One event per run of consecutive flagged points.
        gap = float(np.median(np.diff(s)))
        events = [spikes[0]]
        last = spikes[0]["step"]
        for sp in spikes[1:]:
            if sp["step"] - last > 2 * gap:
                events.append(sp)
            last = sp["step"]
        unresolved = [e for e in events if e["recovered_after_points"] is None]
        ev = {"spikes": events[:20], "n_spikes": len(events), "noise_sigma": C.num(sigma_v),
              "spike_z_threshold": o["spike_z"]}
        first = events[0]
        if unresolved:
            msg = (f"The train loss spiked at step {unresolved[-1]['step']} ({unresolved[-1]['loss']} "
                   f"vs a local median of {unresolved[-1]['local_median']}) and had not come back by the "
                   "end of the log.")
        elif len(events) == 1:
            msg = (f"One train-loss spike at step {first['step']} ({first['loss']} vs a local median of "
                   f"{first['local_median']}, robust z {first['robust_z']}); it recovered within "
                   f"{first['recovered_after_points']} logged point(s).")
        else:
            msg = (f"{len(events)} train-loss spikes (first at step {first['step']}); each recovered, "
                   "but repeated spikes mean the LR sits at the edge of stability.")
        return [self.finding("warning", msg, confidence=0.6 if len(events) > 1 or unresolved else 0.5,
                             evidence=ev, fix=self._fix(),
                             next_experiment=f"Replay the batches around step {first['step']} from its "
                                             "checkpoint with the same seed: a spike that repeats points "
                                             "at the data (inspect those batches); one that vanishes with "
                                             "the LR halved points at the optimiser.")]

    # ---- gradient norms ----------------------------------------------------------------------
    def _grad_norm(self, h) -> list:
        s, g = C.finite(*h.series("grad_norm"))
        if g.size < 5:
            return []
        start = C.fit_region_start(h, 0.1)
        k = self.opts["grad_explosion_factor"]
        w = int(self.opts["window"])
        med = C.trailing_median(g, w)
        idx = np.arange(g.size)
        after = med[(s >= start) & np.isfinite(med)]
        working = float(after.max()) if after.size else float(np.median(g))
        with np.errstate(invalid="ignore"):
            # Scale-aware: after a loss memorised to ~0 the grad norms shrink by orders of
            # magnitude, and a blip there is x1000 its local median while still below the norm
            # the run trained at (the highest rolling-median level after warmup: most of a long
            # run can sit at the memorised scale); an explosion must also reach that norm.
            hit = (idx >= 3) & (s >= start) & (med > 0) & (g >= k * med) & (g >= working)
        hits = [{"step": int(s[i]), "grad_norm": C.num(g[i]), "local_median": C.num(med[i]),
                 "ratio": C.num(g[i] / med[i], 3)} for i in np.flatnonzero(hit)]
        post = g[s >= start]
        growth = None
        if post.size >= 10:
            n = max(2, post.size // 5)
            early, late = float(np.median(post[:n])), float(np.median(post[-n:]))
            if early > 0 and late >= k * early:
                growth = late / early
        zeros = float(np.mean(post == 0)) if post.size else 0.0
        if zeros >= self.opts["zero_grad_share"]:
            hits_zero = {"zero_grad_norm_share": C.num(zeros, 3), "points_after_warmup": int(post.size)}
        else:
            hits_zero = None
        if not hits and growth is None and hits_zero is None:
            return []
        ev: dict[str, Any] = {"explosions": hits[:20], "n_explosions": len(hits),
                              "factor_threshold": k, "grad_norm_median": C.num(np.median(g))}
        parts = []
        if hits:
            top = max(hits, key=lambda x: x["ratio"])
            parts.append(f"{len(hits)} grad-norm explosion(s) (largest at step {top['step']}: "
                         f"{top['grad_norm']}, x{top['ratio']} its local median)")
        if growth is not None:
            ev["late_over_early_median"] = C.num(growth, 3)
            parts.append(f"the median grad norm grew x{growth:.0f} from after warmup to the end")
        if hits_zero is not None:
            ev.update(hits_zero)
            parts.append(f"the grad norm was exactly 0 at {zeros:.0%} of the logged steps after warmup "
                         "(no gradient reached the weights on those steps)")
        text = "; ".join(parts)
        return [self.finding("warning", text[0].upper() + text[1:] + ".", confidence=0.5,
                             evidence=ev, fix=self._fix(),
                             next_experiment="Log per-layer grad norms (degrade.Recorder) around the "
                                             "largest explosion: one layer dominating names where to "
                                             "clip or normalise.")]

    @staticmethod
    def _fix() -> str:
        return ("Lower the peak LR or lengthen its warmup; clip gradients (max_grad_norm=1.0); prefer "
                "bf16 to fp16; inspect the batches at the spike steps.")
