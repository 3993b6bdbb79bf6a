"""O102 error-bars: how precise is each logged eval metric, and were decisions taken inside the noise?"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from degrade.check import Check
from degrade.checks.observation._clusters import Clusters
from degrade.checks.observation._stats import (
    MDE_FACTOR, Z95, binomial_se, bootstrap_se, cluster_bootstrap_se, eval_size_from_records,
    lower_is_better, mde, metric_kind, num, paired_ratio_se, ratio_se, to_full, wilson, z_test,
)
from degrade.errors import InputError
from degrade.layers import Layer
from degrade.option import Option
from degrade.run.history import eval_set_label
from degrade.run.tasks import SEQ_CLS

if TYPE_CHECKING:
    from degrade.probing.scoring import Scores
    from degrade.run.run import Run

_CKPT_STEP_RE = re.compile(r"checkpoint-(\d+)")


@dataclass
class MetricBar:
    key: str  # metric name without the eval_ / eval_<set>_ prefix
    kind: str  # proportion | approx-proportion | loss
    step: float
    value: float
    se: float
    lo: float
    hi: float
    how: str
    se_at: dict[float, float] = field(default_factory=dict)  # step -> SE of that record's value
    clusters: dict[str, Any] | None = None  # clustered SE: clusters, design effect, naive SE

    def to_dict(self) -> dict[str, Any]:
        out = {"step": self.step, "value": num(self.value, 6), "se": num(self.se, 3),
               "ci95": [num(self.lo, 5), num(self.hi, 5)], "how": self.how}
        if self.clusters is not None:
            out["clusters"] = self.clusters
        return out


class ErrorBars(Check):
    """Eval metrics without error bars, and checkpoint decisions taken inside the noise.

    What it detects: the standard error (SE) and 95% CI of each logged eval metric, the minimum
    detectable effect (MDE) of the eval set, and whether the run's "best" checkpoint is really
    better than the last one. Errors: an eval set too small to rank anything (n below
    min_examples with a CI wider than +-max_ci_halfwidth), or a best checkpoint that the run
    selected (load_best_model_at_end / metric_for_best_model) which is not significantly better
    than the last one. Warning: an MDE above mde_warn (the eval cannot see differences of that
    size). Info: the error bars themselves.
    Why it matters: an eval metric is an estimate from a finite sample. Differences smaller than
    its noise are not evidence; a checkpoint selected by noise reports an optimistic (winner's
    curse) score and is an arbitrary choice.
    Evidence used: (a) with the model and eval data: per-example scores of the chosen checkpoint:
    closed-form SE for means (s/sqrt(n)), clustered on examples for token-pooled metrics (Miller
    2024 §2.2), bootstrap (--budget resamples) for f1/precision/recall; a best-vs-last comparison
    on the paired per-example differences when both checkpoints can be scored. Clusters: when the
    eval data has a group column (group, source or doc_id: the unit examples were sampled by, e.g.
    several questions about one document) with more than one example per group on average, the
    examples are not independent and every SE is clustered on the groups (Miller 2024 §2.2; the
    Liang-Zeger sandwich: per-group sums of the numerators and denominators put into the same
    ratio formula, G/(G-1) small-sample factor), for the loss, accuracy and the paired best-vs-last
    difference; f1/precision/recall bootstrap whole groups. The evidence gives the number of
    clusters, the design effect (clustered / naive variance) and the naive SE; the MDE and CIs use
    the clustered SE (a classifier's Wilson CI on the effective n = n / design effect). A budgeted
    sample of the examples breaks groups up, so its design effect is extrapolated to the full set's
    cluster size (Kish: 1 + (m - 1) * rho). (b) From the history
    alone: n = eval_runtime x eval_samples_per_second (an estimate; refined when logged accuracies
    are k/n fractions) and SE = sqrt(p(1-p)/n) for accuracy-like metrics in [0,1] (for token-level
    accuracies this treats examples as the unit: conservative); comparisons between records are
    then unpaired (conservative: positively correlated checkpoints have a smaller paired SE), and
    an error needs the difference to be insignificant even under an assumed paired correlation of
    0.5. The loss has no SE from the history alone (its per-example spread is not logged). The
    history cannot know the groups: when grouped eval data is given but the model is unavailable,
    the evidence says that the SE assumes independent examples and is optimistic by the (unknown)
    design effect.
    Fix: evaluate on more examples (the MDE shrinks as 1/sqrt(n); Miller 2024: ~4,400 items to
    detect 3 points at 50% accuracy unpaired, about half that paired), report CIs, and select
    checkpoints only on differences beyond the MDE (or by a paired test).
    """

    code, name, layer = "O102", "error-bars", Layer.OBSERVATION
    needs = frozenset({"eval_logged"})
    options = (
        Option("min_examples", 100,
               source="Miller 2024 (Adding Error Bars to Evals) power analysis: at n=100 and p=0.5 "
                      "the 95% CI is +-9.8 points and the unpaired MDE is 2.8*sqrt(2)*0.05 = 19.8 points",
               help="Below this the eval set is too small to rank anything: such an eval can only "
                    "separate a broken model from a working one."),
        Option("max_ci_halfwidth", 0.05,
               source="design choice: a near-perfect model on 60 items has a narrow Wilson interval "
                      "and is not an error",
               help="A small eval set (below min_examples) is only an error when its main metric's "
                    "95% CI is wider than +- this."),
        Option("mde_warn", 0.05,
               source="Miller 2024 (Adding Error Bars to Evals): detecting 3 points at p=0.5 needs "
                      "~4,400 items; an MDE above 5 points misses differences most training changes "
                      "produce",
               help="Warn when the unpaired minimum detectable effect (alpha=0.05, power 0.8: "
                    "2.8*SE*sqrt(2)) of an accuracy-like metric exceeds this."),
        Option("min_clusters", 30,
               source="Cameron & Miller 2015 (A Practitioner's Guide to Cluster-Robust Inference) put "
                      '"few" clusters anywhere from below 20 to below 50 depending on balance; 30 is '
                      "the middle of that range",
               help="With fewer clusters the clustered SE is flagged as unreliable (a cluster-robust "
                    "SE is biased down when clusters are few and the test built on it over-rejects): "
                    "read the error bars as lower bounds."),
        Option("assumed_rho", 0.5,
               source="Miller 2024 (Adding Error Bars to Evals) section 4 uses 0.5 as the example of a "
                      "moderately correlated pair; checkpoints of one run are usually more correlated",
               help="The paired correlation assumed when only the history is available: a best "
                    "checkpoint is an error (not a warning) when its difference from the last is "
                    "insignificant even at this correlation."),
    )

    def run(self, run: "Run") -> list:
        h = run.history
        scores, n_data, why_no_scores = self._scores(run)
        clusters = self._clusters(run)
        main = h.main_eval_set()
        picked = self._picked(run)
        per_set: dict[str, dict[str, Any]] = {}
        bars_by_set: dict[str, dict[str, MetricBar]] = {}
        size_by_set: dict[str, tuple[int | None, str, bool]] = {}
        for set_name in h.eval_sets:
            recs = [r for r in h.evals[set_name]]
            keys = ["loss"] * any("loss" in r for r in recs) + \
                [k for k in h.eval_metrics(set_name) if metric_kind(k) in ("proportion", "approx-proportion")]
            prop_keys = [k for k in keys if metric_kind(k) == "proportion"]
            n_hist, how_hist = eval_size_from_records(recs, prop_keys)
            use_scores = scores is not None and set_name == main
            if use_scores:
                n, n_how, exact = n_data, f"{n_data} examples in the eval data given", True
                if n_hist is not None and abs(n_hist - n_data) > max(2, 0.05 * n_hist):
                    n_how += (f" (the history implies {n_hist}: if this is not the logged eval set, "
                              "O101 says so)")
            else:
                n, n_how = n_hist, how_hist
                exact = n_hist is not None and "exact k/n" in how_hist
            size_by_set[set_name] = (n, n_how, exact)
            ref = self._reference_record(run, recs) if use_scores else recs[-1]
            bars: dict[str, MetricBar] = {}
            for key in keys:
                bar = (self._bar_from_scores(run, scores, key, ref, recs, n_data, clusters)
                       if use_scores else None)
                if bar is None and n is not None and metric_kind(key) != "loss":
                    bar = self._bar_from_history(key, ref, recs, n, n_how)
                if bar is not None:
                    bars[key] = bar
            bars_by_set[set_name] = bars
            entry: dict[str, Any] = {"n": n, "n_source": n_how, "route": "per-example scores" if use_scores
                                     else "history", "metrics": {k: b.to_dict() for k, b in bars.items()}}
            missing = [k for k in keys if k not in bars]
            if missing:
                entry["no_error_bar"] = {k: ("the loss's per-example spread is not in the history; "
                                             "pass --eval-data with a checkpoint" if metric_kind(k) == "loss"
                                             else "the eval-set size is unknown") for k in missing}
            if clusters is not None and set_name == main:
                entry["clusters"] = clusters.summary()
                if not use_scores:
                    entry["clusters"]["note"] = (
                        "the eval data groups its examples into clusters, but without per-example "
                        "scores the SE assumes independent examples: it is optimistic by the design "
                        "effect (sqrt(design effect) on the SE; unknown without the model's scores)")
            main_key = self._main_metric(bars)
            if main_key is not None:
                b = bars[main_key]
                entry["main_metric"] = main_key
                entry["mde_unpaired"] = num(mde(b.se * math.sqrt(2)), 3)
            entry["decision"] = self._decision(run, set_name, recs, bars, picked, scores, n_data,
                                               use_scores, clusters)
            per_set[eval_set_label(set_name)] = entry
        if why_no_scores:
            for e in per_set.values():
                if e["route"] == "history":
                    e["why_history_only"] = why_no_scores
        return self._findings(per_set, bars_by_set, size_by_set, picked, h)

    # ---- inputs --------------------------------------------------------------------------------
    def _scores(self, run: "Run") -> tuple["Scores | None", int, str | None]:
        if run.eval_data is None:
            return None, 0, "no eval data given (--eval-data)"
        reason = run.model_unavailable()
        if reason is not None:
            return None, 0, reason
        try:
            return run.eval_scores(), len(run.eval_data), None
        except InputError as e:  # the model exists but cannot be loaded: history route instead
            return None, 0, str(e)

    def _clusters(self, run: "Run") -> Clusters | None:
        """The eval data's clusters, when it has a group column and more than one example per
        cluster on average (otherwise the per-example SE is already the clustered one)."""
        data = run.eval_data
        groups = getattr(data, "group", None) if data is not None else None
        if not groups or len(set(groups)) >= len(groups):
            return None
        return Clusters(np.asarray(groups, dtype=str), int(self.opts["min_clusters"]))

    @staticmethod
    def _reference_record(run: "Run", recs: list[dict]) -> dict:
        """The record the per-example scores stand for: the chosen checkpoint's step."""
        ckpt = run.model_checkpoint
        at = [r for r in recs if r["step"] == ckpt.step]
        if not at:
            at = [r for r in recs if r["step"] <= ckpt.step] or recs
        return at[-1]

    @staticmethod
    def _picked(run: "Run") -> dict[str, Any] | None:
        """The checkpoint the run itself selected (trainer_state best_metric/best_model_checkpoint)."""
        meta = run.history.meta
        best_metric = meta.get("best_metric")
        if best_metric is None:
            return None
        step = meta.get("best_global_step")
        if step is None and meta.get("best_model_checkpoint"):
            m = _CKPT_STEP_RE.search(str(meta["best_model_checkpoint"]))
            step = int(m.group(1)) if m else None
        for set_name, recs in run.history.evals.items():
            for r in recs:
                if step is not None and r["step"] != step:
                    continue
                for k, v in r.items():
                    if k in ("step", "epoch") or not isinstance(v, (int, float)):
                        continue
                    if math.isclose(float(v), float(best_metric), rel_tol=1e-9, abs_tol=1e-12):
                        return {"set": set_name, "key": k, "step": r["step"], "value": float(v),
                                "checkpoint": meta.get("best_model_checkpoint")}
        return {"set": None, "key": None, "step": step, "value": float(best_metric),
                "checkpoint": meta.get("best_model_checkpoint")}

    # ---- error bars ----------------------------------------------------------------------------
    def _bar_from_history(self, key: str, ref: dict, recs: list[dict], n: int, n_how: str) -> MetricBar | None:
        if not isinstance(ref.get(key), (int, float)) or not 0.0 <= ref[key] <= 1.0:
            return None
        kind = metric_kind(key)
        p = float(ref[key])
        lo, hi = wilson(p, n)
        how = f"binomial sqrt(p(1-p)/n), n {n_how}; Wilson 95% CI"
        if kind == "approx-proportion":
            how += "; an approximation: this metric is not a mean of 0/1 scores"
        if "token" in key:
            how += "; examples as the unit, so conservative for a token-level accuracy"
        se_at = {r["step"]: binomial_se(float(r[key]), n) for r in recs
                 if isinstance(r.get(key), (int, float)) and 0.0 <= r[key] <= 1.0}
        return MetricBar(key, kind, ref["step"], p, binomial_se(p, n), lo, hi, how, se_at)

    def _bar_from_scores(self, run: "Run", s: "Scores", key: str, ref: dict, recs: list[dict],
                         n_full: int, cl: Clusters | None = None) -> MetricBar | None:
        if not isinstance(ref.get(key), (int, float)):
            return None
        value = float(ref[key])
        kind = metric_kind(key)
        cls = run.task == SEQ_CLS
        sampled = f"{s.n} of {n_full} examples scored" if s.n < n_full else f"all {n_full} examples scored"
        ev = None
        if kind in ("loss", "proportion"):
            # A mean over examples is the ratio estimator with counts of 1 (classification:
            # n_targets == 1), so one formula serves means, token-pooled ratios and clusters.
            per_example = s.loss if kind == "loss" else s.correct
            cols = (per_example * s.n_targets, s.n_targets)
            if cl is None:
                est, se = ratio_se(*cols)
                se = to_full(se, s.n, n_full)
            else:
                est, se, ev = cl.closed_form(ratio_se, cols, s.indices, n_full)
        if kind == "loss":
            how = ("s/sqrt(n) of per-example cross-entropy" if cls else "token-pooled mean (delta method)"
                   + ("" if ev else ", SE clustered on examples"))
            se_at = {r["step"]: se for r in recs if "loss" in r}
            how += (cl.how(ev) if ev else "") + f"; {sampled}; other records assume the same per-example spread"
            return MetricBar(key, kind, ref["step"], value, se, value - Z95 * se, value + Z95 * se,
                             how, se_at, ev)
        if kind == "proportion":
            if cls:
                # Wilson on the effective sample size n / design effect (Kish) when clustered.
                deff = (ev or {}).get("design_effect") or 1.0
                lo, hi = wilson(value, n_full / deff)
                how = "s/sqrt(n) of per-example 0/1 correctness; Wilson 95% CI"
                if ev:
                    how += " on the effective n = n / design effect"
            else:
                lo, hi = max(0.0, value - Z95 * se), min(1.0, value + Z95 * se)
                how = "token-pooled accuracy (delta method)" + ("" if ev else ", SE clustered on examples")
            base = est * (1 - est)
            se_at = {}
            for r in recs:
                v = r.get(key)
                if isinstance(v, (int, float)) and 0.0 <= v <= 1.0:
                    se_at[r["step"]] = (se * math.sqrt(v * (1 - v) / base) if base > 0
                                        else binomial_se(float(v), n_full))
            how += (cl.how(ev) if ev else "") + f"; {sampled}; other records scaled by sqrt(p(1-p))"
            return MetricBar(key, kind, ref["step"], value, se, lo, hi, how, se_at, ev)
        if kind == "approx-proportion" and cls and s.probs is not None:
            stat = self._cls_stat(key, s, run)
            if stat is None:
                return None
            b, seed = run.budget.bootstrap, run.options.seed
            se = to_full(bootstrap_se(stat, s.n, b, seed)[0], s.n, n_full)
            how = f"bootstrap over examples ({b} resamples)"
            if cl is not None:
                clustered = to_full(cluster_bootstrap_se(stat, cl.groups[s.indices], b, seed)[0], s.n, n_full)
                se, ev = cl.combine(se, clustered, s.indices, n_full)
                how = f"bootstrap over whole clusters ({b} resamples)" + cl.how(ev)
            se_at = {r["step"]: se for r in recs if key in r}
            how += f"; {sampled}; other records assume the same SE"
            return MetricBar(key, kind, ref["step"], value, se, value - Z95 * se, value + Z95 * se,
                             how, se_at, ev)
        return None

    @staticmethod
    def _cls_stat(key: str, s: "Scores", run: "Run"):
        labels = np.asarray([run.eval_data.label[int(i)] for i in s.indices])
        preds = s.probs.argmax(1)
        classes = np.unique(np.concatenate([labels, preds]))
        binary = s.probs.shape[1] == 2
        which = "f1" if "f1" in key else "precision" if "precision" in key else "recall"

        def stat(idx: np.ndarray) -> float:
            y, p = labels[idx], preds[idx]
            vals = []
            for c in ([1] if binary else classes):
                tp = float(((p == c) & (y == c)).sum())
                fp = float(((p == c) & (y != c)).sum())
                fn = float(((p != c) & (y == c)).sum())
                prec = tp / (tp + fp) if tp + fp else 0.0
                rec = tp / (tp + fn) if tp + fn else 0.0
                vals.append({"precision": prec, "recall": rec,
                             "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}[which])
            return float(np.mean(vals))
        return stat

    @staticmethod
    def _main_metric(bars: dict[str, MetricBar]) -> str | None:
        props = [k for k, b in bars.items() if b.kind == "proportion"]
        for k in ("accuracy", "acc"):
            if k in props:
                return k
        if props:
            return props[0]
        approx = [k for k, b in bars.items() if b.kind == "approx-proportion"]
        return approx[0] if approx else None

    # ---- decisions -----------------------------------------------------------------------------
    def _decision(self, run, set_name, recs, bars, picked, scores, n_data, use_scores,
                  clusters=None) -> dict[str, Any] | None:
        by_run = picked is not None and picked["set"] == set_name and picked["key"] in bars
        run_note = None
        if picked is not None and picked["set"] == set_name and not by_run:
            last = recs[-1]["step"]
            run_note = (f"the run selected step {picked['step']} by eval_{picked['key']}"
                        + (" (the last eval: no choice to test)" if picked["step"] == last else
                           ", which has no error bar here (needs per-example scores: pass --eval-data "
                           "and a checkpoint), so the selection cannot be tested"))
        if by_run:
            key = picked["key"]
        else:
            key = self._main_metric(bars) or ("loss" if "loss" in bars else None)
        if key is None or len(recs) < 2:
            return {"selected_by_run": False, "run_selection": run_note} if run_note else None
        bar = bars[key]
        lower = lower_is_better(key)
        pts = [(r["step"], float(r[key])) for r in recs if isinstance(r.get(key), (int, float))
               and r["step"] in bar.se_at]
        if len(pts) < 2:
            return None
        sign = -1.0 if lower else 1.0
        # Ties go to the later record: a best that equals the last is no decision against the last.
        best_step, best_val = max(pts, key=lambda t: (sign * t[1], t[0]))
        if by_run and picked["step"] is not None:
            best_step = picked["step"]
            best_val = next((v for s_, v in pts if s_ == best_step), best_val)
        last_step, last_val = pts[-1]
        rest = [t for t in pts if t[0] != best_step]
        out: dict[str, Any] = {"metric": key, "selected_by_run": by_run, **({"run_selection": run_note} if run_note else {}),
                               "best_step": best_step, "best_value": num(best_val, 6),
                               "last_step": last_step, "last_value": num(last_val, 6)}
        if best_step == last_step:
            out["best_is_last"] = True
        else:
            diff = sign * (best_val - last_val)
            se_b, se_l = bar.se_at[best_step], bar.se_at[last_step]
            se_unpaired = math.sqrt(se_b ** 2 + se_l ** 2)
            paired, paired_ev = (self._paired_se(run, key, best_step, last_step, scores, n_data, clusters)
                                 if use_scores and by_run else (None, None))
            if paired is not None:
                se_diff, how = paired, "paired per-example differences of the two checkpoints"
                if paired_ev:
                    how += clusters.how(paired_ev)
            else:
                se_diff, how = se_unpaired, "unpaired (the two records' SEs combined): conservative"
            z, p = z_test(diff, se_diff)
            out["vs_last"] = {"difference": num(diff, 4), "se_diff": num(se_diff, 3), "z": num(z, 3),
                              "p": num(p, 3), "mde": num(mde(se_diff), 3), "how": how,
                              "significant": bool(abs(z) >= Z95)}
            if paired_ev:
                out["vs_last"]["clusters"] = paired_ev
            if paired is None:
                rho = self.opts["assumed_rho"]
                se_rho = se_unpaired * math.sqrt(1 - rho)
                z_rho, _ = z_test(diff, se_rho)
                out["vs_last"][f"z_if_paired_rho_{rho:g}"] = num(z_rho, 3)
                out["vs_last"][f"significant_if_paired_rho_{rho:g}"] = bool(abs(z_rho) >= Z95)
            out["vs_last"]["paired"] = paired is not None
        if rest:
            ru_step, ru_val = max(rest, key=lambda t: (sign * t[1], t[0]))
            diff = sign * (best_val - ru_val)
            se_diff = math.sqrt(bar.se_at[best_step] ** 2 + bar.se_at[ru_step] ** 2)
            z, p = z_test(diff, se_diff)
            out["vs_runner_up"] = {"runner_up_step": ru_step, "runner_up_value": num(ru_val, 6),
                                   "difference": num(diff, 4), "se_diff": num(se_diff, 3),
                                   "z": num(z, 3), "significant": bool(abs(z) >= Z95),
                                   "how": "unpaired: conservative"}
        return out

    def _paired_se(self, run, key, best_step, last_step, scores, n_data,
                   clusters: Clusters | None = None) -> tuple[float | None, dict | None]:
        """(SE of (best - last), cluster evidence) from both checkpoints scored on the same
        examples, clustered on the eval data's groups when it has them."""
        from degrade.probing.scoring import score
        by_step = {}
        for c in run.checkpoints:
            if c.weights is not None:
                by_step[c.step] = c  # later entries (the root at the same step) win
        if best_step not in by_step or last_step not in by_step:
            return None, None
        chosen = run.model_checkpoint
        sc = {}
        for st in (best_step, last_step):
            c = by_step[st]
            if chosen is not None and c.path.resolve() == chosen.path.resolve():
                sc[st] = scores
            else:
                sc[st] = score(run.load_model(c), run.eval_data, run.budget.max_eval_examples,
                               seed=run.options.seed)
        a, b = sc[best_step], sc[last_step]
        if not np.array_equal(a.indices, b.indices):
            return None, None
        kind = metric_kind(key)
        if kind not in ("loss", "proportion"):
            return None, None
        field_ = "loss" if kind == "loss" else "correct"
        cols = (getattr(a, field_) * a.n_targets, getattr(b, field_) * b.n_targets, a.n_targets)
        ev = None
        if clusters is None:
            _, se = paired_ratio_se(*cols)
            se = to_full(se, a.n, n_data)
        else:
            _, se, ev = clusters.closed_form(paired_ratio_se, cols, a.indices, n_data)
        return (se, ev) if math.isfinite(se) else (None, None)

    # ---- findings ------------------------------------------------------------------------------
    def _findings(self, per_set, bars_by_set, size_by_set, picked, h) -> list:
        findings = []
        labels = {eval_set_label(s): s for s in bars_by_set}
        # E1: too small to rank anything
        for label, entry in per_set.items():
            n, n_how, exact = size_by_set[labels[label]]
            if n is None or n >= self.opts["min_examples"]:
                continue
            main = entry.get("main_metric")
            bars = bars_by_set[labels[label]]
            key = main or ("loss" if "loss" in bars else None)
            half = None
            if key is not None:
                b = bars[key]
                half = (b.hi - b.lo) / 2 if b.kind != "loss" else None
            if half is not None and half <= self.opts["max_ci_halfwidth"]:
                continue
            worst_mde = MDE_FACTOR * math.sqrt(2) * 0.5 / math.sqrt(n)
            if entry.get("mde_unpaired") is not None:
                mde_txt = f"two evaluations must differ by {entry['mde_unpaired']:.3g} before the difference is detectable"
            else:
                mde_txt = (f"two evaluations of an accuracy must differ by up to {worst_mde:.2f} (at p=0.5) "
                           "before the difference is detectable")
            msg = (f"The {label} set has only {n} examples: " +
                   (f"eval_{key} {bars[key].value:.4g} has a 95% CI of +-{half:.3g}, and " if half is not None else "") +
                   mde_txt + ". Nothing this eval ranks can be trusted.")
            findings.append(self.finding(
                "error", msg, confidence=0.7 if exact else 0.6,
                evidence={"eval_set": label, "n": n, "n_source": n_how,
                          "min_examples": self.opts["min_examples"], "ci95_halfwidth": num(half, 3),
                          "mde_unpaired_at_p_0.5": num(worst_mde, 3), **self._evidence_of(entry)},
                fix=f"Evaluate on at least {self.opts['min_examples']} examples (better: enough that "
                    "the MDE is below the differences you care about; MDE ~ 2.8*sqrt(2)*SE).",
                next_experiment="Re-evaluate the final checkpoint on a larger held-out sample and "
                                "compare with the logged value: the gap shows how much of it was noise."))
        errored = {f.evidence["eval_set"] for f in findings}
        # E2: the run selected a best checkpoint inside the noise
        for label, entry in per_set.items():
            d = entry.get("decision") or {}
            vs = d.get("vs_last")
            if not d.get("selected_by_run") or not vs:
                continue
            if vs["significant"] and (vs["difference"] or 0) < 0:
                key = d["metric"]
                findings.append(self.finding(
                    "warning",
                    f"The run selected step {d['best_step']} as its best checkpoint by eval_{key}, but it is "
                    f"significantly worse than the last one ({d['best_value']} vs {d['last_value']}, "
                    f"z={vs['z']}): the selection's direction (greater_is_better) looks reversed.",
                    confidence=0.6,
                    evidence={"eval_set": label, **d, "n": entry["n"], "n_source": entry["n_source"]},
                    fix="Set greater_is_better to match metric_for_best_model (True for accuracy-like "
                        "metrics, False for losses).",
                    next_experiment="Compare trainer_state's best_metric with the eval records: the "
                                    "selected value should be the best of them."))
                continue
            if vs["significant"]:
                continue
            rho_key = f"significant_if_paired_rho_{self.opts['assumed_rho']:g}"
            strong = vs["paired"] or not vs.get(rho_key, True)
            key = d["metric"]
            msg = (f"The run selected step {d['best_step']} as its best checkpoint by eval_{key} "
                   f"({d['best_value']}) over the last one at step {d['last_step']} ({d['last_value']}), "
                   f"but the difference {vs['difference']} is inside the noise (z={vs['z']}, "
                   f"MDE {vs['mde']}; {vs['how']}). The choice is arbitrary and its score is optimistic.")
            if strong:
                findings.append(self.finding(
                    "error", msg, confidence=0.7 if vs["paired"] else 0.6,
                    evidence={"eval_set": label, **d, "n": entry["n"], "n_source": entry["n_source"]},
                    fix="Select checkpoints only on differences beyond the MDE (or by a paired test on "
                        "per-example scores), or keep the last checkpoint; report the selected score "
                        "with its CI.",
                    next_experiment="Score the best and the last checkpoint on a fresh held-out sample: "
                                    "if the ranking does not repeat, the selection was noise."))
            else:
                findings.append(self.finding(
                    "warning", msg + " (Unpaired test; a paired one could separate them.)",
                    confidence=0.5,
                    evidence={"eval_set": label, **d, "n": entry["n"], "n_source": entry["n_source"]},
                    fix="Compare the two checkpoints on paired per-example scores before trusting the choice.",
                    next_experiment="Pass --eval-data and --checkpoint best so degrade can score both "
                                    "checkpoints on the same examples (paired test)."))
        # W1: the eval cannot see moderate differences
        wide = {label: e for label, e in per_set.items()
                if label not in errored and e.get("mde_unpaired") is not None
                and e["mde_unpaired"] > self.opts["mde_warn"]}
        if wide:
            parts = [f"{label}: n={e['n']}"
                     + (f" in {e['clusters']['n_clusters']} clusters" if e.get("clusters") else "")
                     + f", eval_{e['main_metric']} MDE {e['mde_unpaired']}"
                     for label, e in list(wide.items())[:6]]
            findings.append(self.finding(
                "warning",
                "The eval set cannot detect differences smaller than "
                f"{min(e['mde_unpaired'] for e in wide.values()):.3g} between two evaluations "
                f"(alpha 0.05, power 0.8, unpaired): {'; '.join(parts)}.",
                confidence=0.6,
                evidence={"sets": {label: self._evidence_of(e) for label, e in wide.items()},
                          "mde_warn": self.opts["mde_warn"]},
                fix="Evaluate on more examples, or compare runs with paired per-example scores (about "
                    "half the items for the same power at paired correlation 0.5, Miller 2024).",
                next_experiment="Treat differences below the MDE as ties; re-evaluate with a larger "
                                "held-out sample before acting on them."))
        # Info: the error bars themselves
        findings.append(self.finding(
            "info", self._info_message(per_set), confidence=0.9,
            evidence={"sets": {label: self._evidence_of(e, full=True) for label, e in per_set.items()},
                      "selected_by_run": picked},
            fix="Report each eval metric with its 95% CI.",
            next_experiment="Use these SEs when comparing runs: a difference below 2.8*SE*sqrt(2) is "
                            "not detectable with this eval set."))
        return findings

    @staticmethod
    def _evidence_of(entry: dict, full: bool = False) -> dict[str, Any]:
        keys = ("n", "n_source", "route", "clusters", "main_metric", "mde_unpaired", "metrics")
        out = {k: entry[k] for k in keys if k in entry}
        if full:
            out.update({k: entry[k] for k in ("decision", "no_error_bar", "why_history_only")
                        if entry.get(k) is not None})
        return out

    @staticmethod
    def _info_message(per_set: dict[str, dict]) -> str:
        parts = []
        for label, e in list(per_set.items())[:6]:
            ms = [f"eval_{k} {m['value']} +- {num(Z95 * m['se'], 2)}" for k, m in e["metrics"].items()
                  if m["se"] is not None]
            n_txt = f"n={e['n']}" if e["n"] is not None else "n unknown"
            if e.get("clusters"):
                n_txt += (f" in {e['clusters']['n_clusters']} clusters"
                          + (", SE clustered" if e["route"] != "history" else ", SE not clustered: optimistic")
                          + (", too few clusters for a reliable SE" if "few_clusters" in e["clusters"] else ""))
            est = ", estimated" if e["route"] == "history" and e["n"] is not None else ""
            parts.append(f"{label} ({n_txt}{est}): " + (", ".join(ms) if ms else "no error bar computable"))
        more = f"; and {len(per_set) - 6} more set(s)" if len(per_set) > 6 else ""
        return "Error bars (95%) of the logged eval metrics: " + "; ".join(parts) + more + "."
