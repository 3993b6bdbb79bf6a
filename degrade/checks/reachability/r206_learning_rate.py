"""R206 learning-rate: the learning rate was far too high or far too low for the weights."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from degrade.check import Check, CheckSkipped
from degrade.checks.reachability import curves as C
from degrade.checks.reachability import weights as W
from degrade.layers import Layer
from degrade.option import Option
from degrade.run.layer_stats import read_layer_stats

_EMBEDDING = ("emb", "wte", "wpe", "tok.", "pos.", "lm_head", "head.weight", "shared")


class LearningRate(Check):
    """The learning rate was far too high or far too low, read from how far each step moved the
    weights and from the shape of the loss curve; per-layer gradient health from the recorder.

    What it detects:
      - the per-step update/weight ratio ||dW||/||W|| of the weight matrices (median over matrices
        and over the recorded steps at >= half the peak LR, warmup excluded). The healthy value is
        about 1e-3 (cs231n, Karpathy); TheDeepChecker calls log10 ratio > -1 too fast and < -4 too
        slow (ANCHORS.md). Sources: the Recorder's layers.jsonl (exact per-step ratios), else
        consecutive checkpoints: ||W_b - W_a|| / ||W_a|| / (steps between) is a LOWER bound of the
        mean per-step ratio (triangle inequality), so checkpoints can show "too high" but never
        "too low";
      - the curve's shape. Too high: the train loss ends at >= `stuck_fraction` of where it
        started (it never settled: oscillating or stuck near chance). Too low: the train loss
        fell by less than `min_drop_fraction` of its start and its last half still falls steadily
        (Mann-Kendall p <= 0.01): a straight slow decline.
      - a rising curve (ended above its start, or its last half trending up) is never read as
        an LR too low, whatever the ratio says: raising the LR while the loss rises is the
        opposite of what R203's reading of the same curve advises;
      - error: the ratio is beyond a TheDeepChecker bound and the curve agrees (too high: the loss
        never came down — then a ratio 10x the healthy 1e-3 is enough; too low: the loss barely
        moved or declines slowly); warning: the ratio alone (with a healthy curve); info: the
        slow-decline shape alone, with no ratio to confirm it (a too-small model or a run cut
        short draws the same curve);
      - gradient health (recorder only, warning): vanishing when ||g_first|| / ||g_last|| < 1e-3
        and ||g_first|| < 1e-4, exploding when the ratio > 70 (AUTOTRAINER, ANCHORS.md), at the
        majority of recorded steps, with first/last the first and last weight matrices outside the
        embeddings.

    Why it matters: too high a rate throws the weights around so the loss cannot settle (or
    diverges); too low a rate moves them so little that the run ends long before the model is
    reached. Either way the architecture is never tested.

    Evidence used: layers.jsonl (update_ratio, grad_norm per parameter), checkpoint weights, the
    train loss and learning-rate log.

    Fix: too high: lower the peak LR 3-10x, add warmup, clip gradients; too low: raise it 10-30x
    (or run an LR range test: the largest LR at which the loss still falls smoothly, /3).

    """

    code, name, layer = "R206", "learning-rate", Layer.REACHABILITY
    needs = frozenset({"train_curve"})
    options = (
        Option("high_log10", -1.0, source="TheDeepChecker via ANCHORS.md: log10 update ratio > -1 "
               "is too fast", help="log10 update/weight ratio above which steps are too large."),
        Option("low_log10", -4.0, source="TheDeepChecker via ANCHORS.md: log10 update ratio < -4 "
               "is too slow", help="log10 update/weight ratio below which steps are too small."),
        Option("stuck_high_log10", -2.0, source="cs231n's healthy ratio ~1e-3 (ANCHORS.md), times 10",
               help="With a loss that never came down, a ratio above this already reads as too high."),
        Option("stuck_fraction", 0.7, source="ANCHORS.md's 'not decreasing' rule applied to the whole "
               "run, loosened to 30%", help="Final/initial train loss at or above this means the loss "
               "never came down."),
        Option("min_drop_fraction", 0.2, source="design choice: a fifth of the starting loss is the "
               "least a run that is not stuck drops", help="A train-loss drop below this fraction of "
               "the start, still falling, is a straight slow decline."),
    )

    def run(self, run):
        o = self.opts
        h = run.history
        ev: dict[str, Any] = {**C.lr_state(h)}
        ratio, bound, source = self._ratio(run, ev)
        shape = self._shape(h, ev)
        findings = []
        log_r = math.log10(ratio) if ratio and ratio > 0 else None
        if log_r is not None:
            ev.update({"update_ratio": C.num(ratio, 3), "log10_update_ratio": round(log_r, 2),
                       "update_ratio_source": source, "update_ratio_is_lower_bound": bound})
        # A loss that never came down while the weights moved >= 10x the healthy 1e-3 per step
        # (a lower bound when read from checkpoints) is too-large steps even under the 1e-1 bound.
        high = log_r is not None and (log_r > o["high_log10"] or
                                      (shape in ("stuck", "rising") and log_r > o["stuck_high_log10"]))
        low = log_r is not None and log_r < o["low_log10"] and not bound
        fix_high = ("Lower the peak learning rate 3-10x (and/or lengthen the warmup, clip gradients "
                    "at 1.0).")
        fix_low = "Raise the learning rate 10-30x, or run an LR range test and take the largest " \
                  "LR at which the loss still falls smoothly, divided by 3."
        nxt_high = ("Rerun with the peak LR divided by 10 for the same steps: a train loss that "
                    "falls well below this run's confirms the LR was too high.")
        nxt_low = ("Rerun with the peak LR multiplied by 10 for the same steps: a train loss that "
                   "falls much faster confirms the LR was too low.")
        rtxt = (f"a median per-step update/weight ratio of {C.num(ratio, 2)} "
                f"(log10 {log_r:.1f}{', a lower bound from checkpoints' if bound else ''}; ~1e-3 is "
                f"healthy, TheDeepChecker's bounds are 1e-4..1e-1)") if log_r is not None else ""
        if high:
            agree = shape in ("stuck", "rising")
            msg = f"The learning rate looks too high: {rtxt}"
            msg += (f", and the train loss never came down (ends at {ev['end_over_start']:.0%} of its "
                    "start)." if agree else ".")
            findings.append(self.finding("error" if agree else "warning", msg,
                                         confidence=0.8 if agree else 0.45, evidence=ev,
                                         fix=fix_high, next_experiment=nxt_high))
        elif low and shape == "rising":
            # Never advise raising the LR while the loss rises (R203 reads that curve): small
            # steps and a rising loss contradict each other, so neither is blamed here.
            findings.append(self.finding(
                "warning", f"The weights barely move ({rtxt}), yet the train loss rises: this is not "
                "an LR too low. Look at R203 (instability) and at the data order before changing the LR.",
                confidence=0.4, evidence=ev, fix="Do not raise the learning rate while the loss rises; "
                "find why it rises first (R203).", next_experiment=nxt_high))
        elif low:
            agree = shape in ("slow", "stuck")
            msg = f"The learning rate looks too low: {rtxt}"
            msg += (f", and the train loss barely moved (dropped only {ev['drop_fraction']:.0%} of its "
                    "start)." if agree else ".")
            findings.append(self.finding("error" if agree else "warning", msg,
                                         confidence=0.8 if agree else 0.45, evidence=ev,
                                         fix=fix_low, next_experiment=nxt_low))
        elif shape == "slow" and log_r is None:
            # Info only: a too-small model or a run cut short draws the same curve.
            findings.append(self.finding(
                "info", f"The train loss is a straight slow decline (dropped only "
                f"{ev['drop_fraction']:.0%} of its start and still falling): the learning rate may be "
                "too low (no update ratios recorded to confirm; record with degrade.Recorder).",
                confidence=0.4, evidence=ev, fix=fix_low, next_experiment=nxt_low))
        findings += self._grad_health(run)
        if log_r is None and shape is None and not findings:
            raise CheckSkipped("no update ratios (no layers.jsonl, fewer than 2 checkpoints) and "
                               "fewer than 5 finite train-loss points to read the curve's shape")
        return findings

    # ---- evidence ----------------------------------------------------------------------------
    def _ratio(self, run, ev) -> tuple[float | None, bool, str]:
        stats = read_layer_stats(run.native_dir) if run.native_dir is not None else None
        if stats:
            r = self._recorder_ratio(run, stats, ev)
            if r is not None:
                return r, False, "layers.jsonl (per step)"
        ckpts = W.with_weights(run)
        if len(ckpts) >= 2:
            return self._checkpoint_ratio(ckpts, ev), True, "consecutive checkpoints"
        return None, False, ""

    def _recorder_ratio(self, run, stats, ev) -> float | None:
        steps = stats.steps
        keep = steps > max(1.0, C.warmup_end(run.history))
        ls, lr = C.finite(*run.history.series("learning_rate"))
        if lr.size and lr.max() > 0:
            at = np.interp(steps, ls, lr)
            keep &= at >= 0.5 * lr.max()
        if not keep.any():
            keep = steps > 1
        per_param = []
        for name, cols in stats.params.items():
            if not _matrix_name(name):
                continue
            r = cols["update_ratio"][keep]
            r = r[np.isfinite(r) & (r > 0)]
            if r.size:
                per_param.append(float(np.median(r)))
        if not per_param:
            return None
        ev["update_ratio_steps"] = [int(s) for s in steps[keep]][:20]
        ev["update_ratio_matrices"] = len(per_param)
        return float(np.median(per_param))

    @staticmethod
    def _checkpoint_ratio(ckpts, ev) -> float:
        pairs = []
        prev = W.load(ckpts[0])
        for a, b in zip(ckpts, ckpts[1:]):
            cur = W.load(b)
            dsteps = max(b.step - a.step, 1)
            ch = W.relative_change(prev, cur)
            vals = [c["ratio"] / dsteps for n, c in ch.items()
                    if _matrix_name(n) and c["dim"] >= 2 and c["delta"] > 0]
            if vals:
                pairs.append({"from": a.step, "to": b.step, "ratio_per_step": float(np.median(vals))})
            prev = cur
        ev["checkpoint_pairs"] = [{k: (C.num(v, 3) if k == "ratio_per_step" else v) for k, v in p.items()}
                                  for p in pairs]
        return max((p["ratio_per_step"] for p in pairs), default=0.0)

    def _shape(self, h, ev) -> str | None:
        s, v = C.finite(*h.series("loss"))
        if s.size < 5:
            return None
        k = max(1, s.size // 10)
        start, end = float(np.median(v[:k])), float(np.median(v[-k:]))
        if start <= 0:
            return None
        ev.update({"train_loss_start": C.num(start), "train_loss_end": C.num(end),
                   "end_over_start": C.num(end / start, 3), "drop_fraction": C.num(1 - end / start, 3)})
        half = s.size // 2
        if end > start or C.trend_p(s[half:], v[half:], "up") <= 0.01:
            return "rising"  # ended above its start, or its last half climbs
        if end >= self.opts["stuck_fraction"] * start:
            p = C.trend_p(s[half:], v[half:], "down")
            ev["last_half_trend_p"] = C.num(p, 3)
            if 1 - end / start < self.opts["min_drop_fraction"] and p <= 0.01:
                return "slow"
            return "stuck"
        return "fell"

    def _grad_health(self, run) -> list:
        if run.native_dir is None:
            return []
        stats = read_layer_stats(run.native_dir)
        if not stats:
            return []
        names = [n for n in stats.params if _matrix_name(n)]
        if len(names) < 2:
            return []
        first, last = stats.params[names[0]]["grad_norm"], stats.params[names[-1]]["grad_norm"]
        ok = np.isfinite(first) & np.isfinite(last) & (last > 0)
        if ok.sum() < 2:
            return []
        ratio = first[ok] / last[ok]
        vanish = (ratio < 1e-3) & (first[ok] < 1e-4)
        explode = ratio > 70
        ev = {"first_matrix": names[0], "last_matrix": names[-1],
              "grad_ratio_first_over_last_median": C.num(float(np.median(ratio)), 3),
              "records": int(ok.sum())}
        if vanish.mean() > 0.5:
            return [self.finding("warning", f"Vanishing gradients: the first weight matrix ({names[0]}) "
                                 f"gets {C.num(float(np.median(ratio)), 2)}x the gradient of the last "
                                 "at most recorded steps (AUTOTRAINER: < 1e-3 and < 1e-4 absolute).",
                                 confidence=0.5, evidence=ev,
                                 fix="Check residual connections and normalisation; use pre-LN; lower depth.",
                                 next_experiment="Plot layers.jsonl grad_norm by depth at one step.")]
        if explode.mean() > 0.5:
            return [self.finding("warning", f"Exploding gradients: the first weight matrix ({names[0]}) "
                                 f"gets {C.num(float(np.median(ratio)), 2)}x the gradient of the last "
                                 "at most recorded steps (AUTOTRAINER: > 70).", confidence=0.5,
                                 evidence=ev, fix="Clip gradients, lower the LR, check the init scale.",
                                 next_experiment="Plot layers.jsonl grad_norm by depth at one step.")]
        return []


def _matrix_name(name: str) -> bool:
    """A weight matrix outside the embeddings (their rows move only when their token is seen) and
    the norms (gains near 1 whose ratios say little about the step size)."""
    low = name.lower()
    if not low.endswith("weight") or any(e in low for e in _EMBEDDING):
        return False
    module = low.rsplit(".", 2)[-2] if "." in low else ""
    return "norm" not in low and not module.startswith("ln")
