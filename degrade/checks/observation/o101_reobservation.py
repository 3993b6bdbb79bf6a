"""O101 re-observation: does the logged eval value come back when the model is evaluated again?"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from degrade.check import Check, CheckSkipped
from degrade.errors import InputError
from degrade.run.files import check_weights
from degrade.checks.observation._stats import (
    fpc, mean_se, metric_kind, num, ratio_se,
)
from degrade.layers import Layer
from degrade.option import Option
from degrade.run.history import eval_set_label

if TYPE_CHECKING:
    from degrade.probing.scoring import Scores
    from degrade.run.run import Checkpoint, Run


class Reobservation(Check):
    """The logged evaluation does not come back when the same checkpoint is evaluated again.

    What it detects: the eval loss (and accuracy, when logged) that the training history holds for
    the chosen checkpoint differs from what degrade recomputes from that checkpoint on the eval
    data, beyond what sampling and numerics allow. It then says which explanation the evidence
    favours: (1) the logged value matches a TRAIN-mode evaluation (dropout/BatchNorm active during
    eval: a custom prediction_step or callback that calls model.train()); (2) it matches ANOTHER
    checkpoint (the wrong weights were evaluated or saved, e.g. load_best_model_at_end); (3)
    neither: the eval data or its preprocessing differ from what was logged (or the logged loss is
    defined differently: label smoothing, a custom compute_loss). Before these, a few rows are scored
    one at a time: when their losses differ from their batched scores, the model's output depends on
    the rest of its batch (padding or other rows leak in), no re-evaluation can reproduce a value
    logged under other batches, and the mismatch is reported as a warning naming the model's code
    (I304, I306), not as an observation error. A logged loss that differs while the logged accuracy
    counts the same number of right targets is read as a loss defined differently (a warning):
    same model, same predictions; unless a train-mode pass gives the logged loss back (dropout at
    eval moves every loss and rarely a confident argmax). One target more or fewer and the
    predictions differ, so the mismatch stands.
    Why it matters: every later layer reads the eval numbers. If they cannot be reproduced, the
    verdict about training, code or hypothesis rests on a number nobody can believe.
    Evidence used: the history's eval record at the checkpoint's step (for the root final model:
    the last eval record at or below its step); per-example scores of the checkpoint in eval mode
    (twice: the evaluation must be deterministic) and in train mode (once; on a mismatch, when
    train mode differs from eval mode, a second pass with independent dropout masks gives the
    spread of the train-mode value); other checkpoints' eval-mode scores when needed.
    A logged loss can be a token-pooled mean or a mean of per-batch means (Hugging Face: each
    batch's token mean weighted by the batch size), so a logged value between the token-pooled and
    the example-mean estimates counts as a match, otherwise the distance to the closer one is used.
    Fix: evaluate under model.eval() and torch.no_grad(); evaluate and save the same weights; use
    the exact eval data and preprocessing of training (tokenizer, truncation, label masking).
    """

    code, name, layer = "O101", "reobservation", Layer.OBSERVATION
    needs = frozenset({"eval_logged", "model", "eval_data"})
    tasks = frozenset({"causal-lm", "sequence-classification", "seq2seq"})
    probes = 1
    options = (
        Option("se_multiple", 3.0,
               source="statistical convention: 3 standard errors, 0.27% false alarms per comparison "
                      "under normality",
               help="A mismatch must exceed this many standard errors of the comparison. When only a "
                    "sample of the eval set is scored (--budget), the SE is the per-example SE of the "
                    "recomputed mean times the finite-population correction sqrt(1 - n/N) (the logged "
                    "value is the full-set mean); when the whole eval set is rescored the sampling term "
                    "is 0 and only the numeric tolerances apply."),
        Option("rel_tol", 0.02,
               source="design choice: half-precision eval (bf16 logits carry ~0.4% relative rounding), "
                      "padding and batch composition move a loss by well under 2%; a dropout-active "
                      "eval of a trained transformer or a different eval set moves it by more",
               help="Relative tolerance on the loss."),
        Option("abs_tol", 1e-6,
               source="float resolution: re-evaluating the same weights on the same data gives the "
                      "logged loss back to ~1e-7 (fp32 sums); bench seed 11: the healthy lexical runs "
                      "(losses 7e-5..3e-4) reproduce to 4 digits while dropout-at-eval twins differ by "
                      "27-155%, under the former 1e-3; dev split (benchmarks/option_sensitivity.py): "
                      "1e-6 .. 2e-3 give the same 110 verdicts",
               help="Absolute loss tolerance, for a loss at 0 where the relative one vanishes."),
        Option("acc_abs_tol", 0.01,
               source="design choice: argmax ties under another precision flip a handful of targets, "
                      "not 1%",
               help="Absolute tolerance on accuracy."),
        Option("determinism_rel_tol", 1e-4,
               source="design choice: CPU passes agree exactly and GPU kernels to ~1e-6",
               help="Two eval-mode passes over the same examples must agree to this relative "
                    "difference, else the evaluation is not deterministic."),
        Option("max_other_checkpoints", 3,
               source="design choice: a cost cap (each checkpoint tried costs a model load and a pass)",
               help='Checkpoints tried as the "wrong checkpoint" explanation, nearest step first '
                    "(capped at 1 under --budget fast, unlimited under thorough)."),
    )

    # ------------------------------------------------------------------------------------------
    def run(self, run: "Run") -> list:
        ckpt = run.model_checkpoint
        candidates = self._logged_records(run, ckpt)
        if not candidates:
            raise CheckSkipped(f"no evaluation was logged at step {ckpt.step} of {ckpt.path.name} "
                               f"(logged eval steps: {self._eval_steps(run)})")
        data = run.eval_data
        n_full = len(data)
        seed = run.options.seed

        s = run.eval_scores()
        n = s.n

        # ---- determinism of the eval-mode pass: a probe sample twice, in the same batches, with
        # two torch seeds (randomness that survives model.eval() shows) ----
        probe = run.engine.subsample(s.indices, run.budget.probe_passes / 2)
        first, again = (run.engine.run_pass(run.model(), data, probe, torch_seed=seed + k,
                                            label="O101 repeat").scores for k in (0, 1))
        det_diff = float(np.max(np.abs(first.loss - again.loss))) if probe.size else 0.0
        det_rel = det_diff / max(abs(s.token_mean_loss), 1e-12)

        # ---- the eval-mode estimates and the tolerance of a comparison with a logged value ----
        self._batch_sizes = self._hf_batch_sizes([r for _, r in candidates], n_full)
        em = self._loss_estimates(s, n_full)
        acc = self._accuracy_estimates(s, n_full)

        # ---- choose the logged record (several eval sets / duplicate records at one step) ----
        best = None
        for set_name, rec in candidates:
            cmp = self._compare(rec, em, acc)
            if cmp is None:
                continue
            if best is None or cmp["score"] < best[2]["score"]:
                best = (set_name, rec, cmp)
        if best is None:
            raise CheckSkipped("the logged eval record has neither a loss nor an accuracy to compare "
                               f"(keys: {', '.join(sorted(candidates[0][1]))})")
        set_name, rec, cmp = best
        bad = int((~np.isfinite(s.loss)).sum())
        if bad:  # no number to compare: the stored model does not compute, whatever was logged
            return [self.finding(
                "warning", f"The checkpoint gives non-finite losses on {bad} of {n} eval examples (inf/NaN "
                "logits), so the logged evaluation cannot be re-observed: the model as stored does not "
                "compute here (I313 tests its precision, R203 the training's stability).",
                confidence=0.5, evidence={"nonfinite_examples": bad, "n_scored": n, "record_step": rec["step"]},
                fix="Find where the forward turns inf/NaN (hook every module) before trusting any eval number.")]

        evidence: dict[str, Any] = {
            "checkpoint": ckpt.path.name if ckpt.path != run.path else "root (final model)",
            "checkpoint_step": ckpt.step, "record_step": rec["step"],
            "eval_set": eval_set_label(set_name),
            "n_scored": n, "n_eval_data": n_full,
            "sampled": n < n_full,
        }
        if "loss" in rec:
            evidence.update({
                "logged_loss": num(rec["loss"], 6),
                "recomputed_loss_token_mean": num(em["token"], 6),
                "recomputed_loss_example_mean": num(em["example"], 6),
                "loss_distance": num(cmp["loss_dist"], 4), "loss_tolerance": num(cmp["loss_tol"], 4),
                "loss_se_of_comparison": num(em["se_gap"], 4),
            })
        if cmp.get("acc_key"):
            evidence.update({
                "accuracy_key": f"eval_{cmp['acc_key']}" if not set_name else f"eval_{set_name}_{cmp['acc_key']}",
                "logged_accuracy": num(rec[cmp["acc_key"]], 6),
                "recomputed_accuracy": num(acc["pooled"], 6),
                "recomputed_accuracy_example_mean": num(acc["example"], 6),
                "accuracy_distance": num(cmp["acc_dist"], 4), "accuracy_tolerance": num(cmp["acc_tol"], 4),
            })
        if em["batch"]:
            evidence["hf_eval_batch_sizes_considered"] = [min(self._batch_sizes), max(self._batch_sizes)]
            evidence["recomputed_loss_hf_batch_mean_range"] = [num(min(em["batch"]), 6),
                                                               num(max(em["batch"]), 6)]
        evidence["eval_mode_repeat_max_abs_diff"] = num(det_diff, 3)
        evidence["eval_mode_repeat_examples"] = int(probe.size)
        evidence.update(self._data_identity(run, rec, set_name))
        step_gap = rec["step"] != ckpt.step and ckpt.step >= 0

        findings = []
        if det_rel > self.opts["determinism_rel_tol"]:
            big = det_diff > cmp.get("loss_tol", self.opts["abs_tol"])
            findings.append(self.finding(
                "error" if big else "warning",
                f"Evaluation in eval mode is not deterministic: two passes over the same {probe.size} examples "
                f"differ by up to {det_diff:.3g} in per-example loss.",
                confidence=0.8 if big else 0.6, evidence=dict(evidence),
                fix="Find the randomness that survives model.eval(): functional dropout called with "
                    "training=True, sampling in forward, or non-deterministic kernels "
                    "(torch.use_deterministic_algorithms(True)).",
                next_experiment="Run the eval twice with the same seed on the same batch and diff the "
                                "logits layer by layer (forward hooks) to find the first module that differs."))
            if big:  # a random re-observation cannot confirm or refute the logged value
                return findings

        if cmp["primary_match"]:
            if cmp.get("acc_key") and not cmp["acc_match"] and cmp.get("loss_dist") is not None:
                msg = (f"The logged eval loss {rec['loss']:.4g} comes back ({em['token']:.4g}), but the "
                       f"logged {cmp['acc_key']} {rec[cmp['acc_key']]:.4g} does not match degrade's "
                       f"{'token' if s.n_targets.max() > 1 else 'example'} accuracy {acc['pooled']:.4g}: "
                       "the accuracy is probably defined differently (sequence-level, other positions).")
            else:
                msg = (f"The logged evaluation at step {rec['step']} comes back: logged "
                       + ", ".join(f"{k} {v}" for k, v in self._pairs(rec, em, acc, cmp)) + ".")
            findings.append(self.finding(
                "info", msg, confidence=0.9, evidence=evidence,
                fix="Nothing to fix.",
                next_experiment="None needed: the logged numbers can be believed as measurements "
                                "(see O102 for their error bars)."))
            return findings

        # ---- mismatch: which explanation does the evidence favour? ----
        same_predictions = (cmp.get("loss_dist") is not None and cmp.get("acc_key") and cmp["acc_match_tight"]
                            and n == n_full)
        # dropout at eval moves every loss and rarely a confident argmax: train mode that gives the
        # logged loss back explains it before "defined differently" is read. On every scored row
        # (two passes, on this path only): near a zero loss the dropout cost sits in a few rows,
        # which a subsample misses (bench seed 11: 39 of 256 rows could not tell the modes apart)
        dropout = self._train_mode(run, rec, cmp, em, acc, s, s.indices, evidence) if same_predictions else None
        if same_predictions and dropout is None:
            findings.append(self.finding(
                "warning",
                f"The logged eval loss {rec['loss']:.4g} differs from the recomputed {em['token']:.4g}, "
                f"but the logged {cmp['acc_key']} matches exactly ({rec[cmp['acc_key']]:.4g}): same model, "
                "same data, same predictions. The loss is defined differently (label smoothing, loss "
                "weighting, a custom compute_loss), not measured wrongly.",
                confidence=0.6, evidence=evidence,
                fix="Report the plain cross-entropy as the eval loss (or name the variant) so that "
                    "losses compare across runs.",
                next_experiment="Check TrainingArguments.label_smoothing_factor and any compute_loss "
                                "override; recompute the eval loss without them."))
            return findings

        explanation, detail = (("train_mode", dropout) if dropout else
                               self._explain(run, ckpt, rec, cmp, em, acc, s, evidence))
        evidence["explanation"] = explanation
        ratio = cmp["score"]
        conf = 0.6 + 0.3 * min(1.0, max(0.0, (ratio - 1.0) / 3.0))
        if explanation != "neither":
            conf = min(0.95, conf + 0.05)
        severity = "error"
        if explanation == "batch_dependent":  # not shown to be the evaluation's fault
            severity, conf = "warning", 0.5
        elif step_gap:
            severity, conf = "warning", 0.4
            detail += (f" The logged record is from step {rec['step']}, the checkpoint from step "
                       f"{ckpt.step}: training between them may explain part of the gap.")
        what = self._mismatch_text(rec, em, acc, cmp)
        findings.append(self.finding(
            severity,
            f"The logged evaluation at step {rec['step']} does not come back ({what}). {detail}",
            confidence=conf, evidence=evidence,
            fix=self._fix(explanation),
            next_experiment=self._next(explanation)))
        return findings

    # ---- the logged side ----------------------------------------------------------------------
    @staticmethod
    def _eval_steps(run: "Run") -> str:
        steps = sorted({int(r["step"]) for recs in run.history.evals.values() for r in recs})
        return ", ".join(map(str, steps[:10])) + (" ..." if len(steps) > 10 else "")

    @staticmethod
    def _logged_records(run: "Run", ckpt: "Checkpoint") -> list[tuple[str, dict]]:
        is_root = ckpt.path.resolve() == run.path.resolve()
        out = []
        for set_name, recs in run.history.evals.items():
            exact = [r for r in recs if r["step"] == ckpt.step]
            if not exact and is_root:
                below = [r for r in recs if r["step"] <= ckpt.step]
                if below:
                    last = max(r["step"] for r in below)
                    exact = [r for r in below if r["step"] == last]
            out += [(set_name, r) for r in exact]
        return out

    @staticmethod
    def _accuracy_key(rec: dict) -> str | None:
        keys = [k for k in rec if k not in ("step", "epoch") and metric_kind(k) == "proportion"
                and isinstance(rec[k], (int, float)) and 0.0 <= rec[k] <= 1.0]
        for k in ("accuracy", "acc"):
            if k in keys:
                return k
        return keys[0] if keys else None

    # ---- the recomputed side -------------------------------------------------------------------
    @staticmethod
    def _hf_batch_sizes(records: list[dict], n_full: int) -> list[int]:
        """Eval batch sizes consistent with the record. Hugging Face's eval_loss is the mean of the
        per-batch (token-)mean losses weighted by the batch's example count (each batch loss is
        repeated batch-size times and gather_for_metrics drops the padding of the last batch), so
        it can differ from both the token and the example mean. The number of batches
        is n * eval_steps_per_second / eval_samples_per_second; every batch size B with
        ceil(n / B) equal to it (within the rounding of the logged rates) is a candidate."""
        rec = next((r for r in records if r.get("steps_per_second") and r.get("samples_per_second")), None)
        if rec is None or n_full < 2:
            return []
        k_est = n_full * float(rec["steps_per_second"]) / float(rec["samples_per_second"])
        if not math.isfinite(k_est) or k_est < 1.5:
            return []
        ks = range(max(2, math.floor(k_est * 0.98 - 0.5)), math.ceil(k_est * 1.02 + 0.5) + 1)
        sizes = sorted({b for k in ks for b in range(math.ceil(n_full / k), math.ceil(n_full / (k - 1)))
                        if math.ceil(n_full / b) == k})
        if len(sizes) > 200:  # evenly thinned: neighbouring sizes give nearly the same value
            sizes = [sizes[i] for i in np.linspace(0, len(sizes) - 1, 200).round().astype(int)]
        return sizes

    def _batch_means(self, values: np.ndarray, s: "Scores", n_full: int) -> list[float]:
        """The HF estimator for each candidate batch size, when the whole eval set was scored in
        data order (sequential eval sampler)."""
        sizes = getattr(self, "_batch_sizes", [])
        if not sizes or s.n != n_full or not np.array_equal(s.indices, np.arange(n_full)):
            return []
        sums, counts = values * s.n_targets, s.n_targets
        out = []
        for b in sizes:
            groups = np.arange(s.n) // b
            bs, bc = np.bincount(groups, sums), np.bincount(groups, counts)
            ne = np.bincount(groups).astype(float)
            ok = bc > 0
            out.append(float(((bs[ok] / bc[ok]) * ne[ok]).sum() / ne[ok].sum()))
        return out

    def _loss_estimates(self, s: "Scores", n_full: int) -> dict[str, Any]:
        token, se_t = ratio_se(s.loss * s.n_targets, s.n_targets)
        example, se_e = mean_se(s.loss)
        se = max(v for v in (se_t, se_e, 0.0) if math.isfinite(v))
        return {"token": token, "example": example, "se_gap": se * fpc(s.n, n_full),
                "batch": self._batch_means(s.loss, s, n_full)}

    def _distance(self, x: float, est: dict[str, Any], a: str = "token", b: str = "example") -> float:
        d = self._interval_distance(x, est[a], est[b])
        return min([d] + [abs(x - v) for v in est.get("batch") or []])

    @staticmethod
    def _paired(full: dict[str, Any], other: np.ndarray, same: np.ndarray, weights: np.ndarray,
                n_scored: int, keys: tuple[str, str] = ("token", "example")) -> dict[str, Any]:
        """`full` (the eval-mode estimate over the whole eval sample) moved by the paired
        difference other - same on the explaining rows: a control-variate estimate of the other
        evaluation over the whole sample. Its error is the spread of the per-example difference
        (small: both are the same examples), not of the values themselves, so a subsample of the
        rows tells a train-mode or other-checkpoint value apart nearly as well as the full set."""
        d = other - same
        pooled, se_p = ratio_se(d * weights, weights)
        mean, se_m = mean_se(d)
        se = max(v for v in (se_p, se_m, 0.0) if math.isfinite(v)) * fpc(d.size, n_scored)
        a, b = keys
        out = {**full, a: full[a] + pooled, b: full[b] + mean, "shift": pooled, "shift_se": se,
               "se_gap": math.hypot(full["se_gap"], se)}
        if full.get("batch"):
            out["batch"] = [x + pooled for x in full["batch"]]
        return out

    def _accuracy_estimates(self, s: "Scores", n_full: int) -> dict[str, float]:
        pooled, se_p = ratio_se(s.correct * s.n_targets, s.n_targets)
        example, se_e = mean_se(s.correct)
        se = max(v for v in (se_p, se_e, 0.0) if math.isfinite(v))
        return {"pooled": pooled, "example": example, "se_gap": se * fpc(s.n, n_full),
                "targets": float(s.n_targets.sum())}  # HF accuracy is pooled over the whole set

    # ---- comparing ------------------------------------------------------------------------------
    @staticmethod
    def _interval_distance(x: float, a: float, b: float) -> float:
        lo, hi = min(a, b), max(a, b)
        return 0.0 if lo <= x <= hi else min(abs(x - lo), abs(x - hi))

    def _loss_tol(self, logged: float, se_gap: float) -> float:
        return max(self.opts["se_multiple"] * se_gap, self.opts["rel_tol"] * abs(logged),
                   self.opts["abs_tol"])

    def _acc_tol(self, se_gap: float) -> float:
        return max(self.opts["se_multiple"] * se_gap, self.opts["acc_abs_tol"])

    def _compare(self, rec: dict, em: dict, acc: dict) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        ratios = []
        if isinstance(rec.get("loss"), (int, float)) and math.isfinite(rec["loss"]):
            dist = self._distance(rec["loss"], em)
            tol = self._loss_tol(rec["loss"], em["se_gap"])
            out.update(loss_dist=dist, loss_tol=tol, loss_match=dist <= tol)
            ratios.append(dist / tol)
        key = self._accuracy_key(rec)
        if key is not None:
            dist = self._interval_distance(rec[key], acc["pooled"], acc["example"])
            tol = self._acc_tol(acc["se_gap"])
            # the same count of right targets: "same predictions" needs no target to differ
            tight = max(0.5 / max(acc["targets"], 1.0), 1e-6)
            out.update(acc_key=key, acc_dist=dist, acc_tol=tol, acc_match=dist <= tol,
                       acc_match_tight=dist <= tight)
            if "loss_dist" not in out:
                ratios.append(dist / tol)
        if not ratios:
            return None
        out["primary_match"] = out.get("loss_match", out.get("acc_match"))
        out["score"] = ratios[0]
        return out

    def _pairs(self, rec, em, acc, cmp):
        if cmp.get("loss_dist") is not None:
            yield "loss", f"{rec['loss']:.4g} vs recomputed {em['token']:.4g}"
        if cmp.get("acc_key"):
            yield cmp["acc_key"], f"{rec[cmp['acc_key']]:.4g} vs {acc['pooled']:.4g}"

    def _mismatch_text(self, rec, em, acc, cmp) -> str:
        parts = []
        if cmp.get("loss_dist") is not None:
            parts.append(f"eval loss logged {rec['loss']:.4g}, recomputed {em['token']:.4g} in eval mode "
                         f"(gap {cmp['loss_dist']:.3g} > tolerance {cmp['loss_tol']:.3g})")
        if cmp.get("acc_key"):
            parts.append(f"{cmp['acc_key']} logged {rec[cmp['acc_key']]:.4g}, recomputed {acc['pooled']:.4g}")
        return "; ".join(parts)

    # ---- explaining a mismatch ------------------------------------------------------------------
    def _explain(self, run, ckpt, rec, cmp, em, acc, s, evidence) -> tuple[str, str]:
        use_loss = cmp.get("loss_dist") is not None
        # Each explaining pass runs on a subsample of the eval sample (budget.explain_passes).
        rows = run.engine.subsample(s.indices, run.budget.explain_passes, minimum=16)
        evidence["explained_on_examples"] = int(rows.size)
        seed, model, data = run.options.seed, run.model(), run.eval_data
        # (0) a model whose output depends on the rest of its batch (padding or other rows leak in)
        # cannot reproduce a value computed under other batches: the model, not the evaluation.
        # The rows are scored alone and padded in one batch with the sample's longest row (the
        # engine groups rows of equal length, so its own batches rarely pad).
        alone = rows[:min(rows.size, 8)]
        solo = np.array([run.engine.run_pass(model, data, np.array([i]), torch_seed=seed,
                                             label="O101 one row").scores.loss[0] for i in alone])
        longest = int(s.indices[int(np.argmax(s.lengths))])
        padded = run.engine.run_pass(model, data, np.unique(np.append(alone, longest)), torch_seed=seed,
                                     label="O101 padded batch").scores
        batched = padded.subset(alone).loss
        batch_diff = float(np.max(np.abs(solo - batched))) if alone.size else 0.0
        evidence["one_row_vs_batched_max_abs_diff"] = num(batch_diff, 4)
        if batch_diff > self._loss_tol(float(np.mean(np.abs(batched))) if alone.size else 0.0, 0.0):
            return "batch_dependent", (
                f"Scored one row at a time, the same {alone.size} examples give per-example losses up to "
                f"{batch_diff:.3g} away from their batched scores: the model's output depends on the rest "
                "of its batch (padding or other rows leak in), so a value logged under other batches "
                "cannot come back. That is the model's code, not the evaluation (see I304 and I306).")
        # (1) train-mode evaluation
        found = self._train_mode(run, rec, cmp, em, acc, s, rows, evidence)
        if found:
            return "train_mode", found
        logged = rec["loss"] if use_loss else rec[cmp["acc_key"]]
        same = s.subset(rows)
        # (2) another checkpoint
        others = self._other_checkpoints(run, ckpt)
        tried: dict[str, Any] = {}
        matches = []
        if others:
            for c in others:
                label = c.path.name if c.path != run.path else "root"
                try:
                    handle = run.load_model(c)
                except InputError as e:
                    tried[label] = {"step": c.step, "unloadable": str(e)[:200]}
                    continue
                so = run.engine.run_pass(handle, data, rows, label=f"O101 {label}").scores
                if use_loss:
                    eo = self._paired(em, so.loss, same.loss, same.n_targets, s.n)
                    d = self._distance(logged, eo)
                    tol = self._loss_tol(logged, eo["se_gap"])
                    val = eo["token"]
                else:
                    ao = self._paired(acc, so.correct, same.correct, same.n_targets, s.n, ("pooled", "example"))
                    d = self._interval_distance(logged, ao["pooled"], ao["example"])
                    tol = self._acc_tol(ao["se_gap"])
                    val = ao["pooled"]
                tried[label] = {"step": c.step, "value": num(val, 6), "distance": num(d, 4),
                                "tolerance": num(tol, 4)}
                if d <= tol:
                    matches.append((d / tol, label, c, val))
                del handle
        evidence["other_checkpoints"] = tried
        if matches:
            _, label, c, val = min(matches)
            return "wrong_checkpoint", (
                f"It matches {label} (step {c.step}, recomputed {val:.4g}) instead: the run evaluated "
                "(or saved) other weights than the ones in this checkpoint.")
        extra = "" if tried else " (no other checkpoint with weights to try)"
        return "neither", (
            "It matches neither a train-mode evaluation nor another checkpoint"
            + extra + ": the eval data or its preprocessing (tokenizer, truncation, label masking) "
            "probably differ from what the run evaluated, or the logged loss is defined differently.")

    def _train_mode(self, run, rec, cmp, em, acc, s, rows, evidence) -> str | None:
        """The detail sentence when a TRAIN-mode pass over `rows` reproduces the logged value,
        else None. When train mode changes nothing (no active dropout/BN) one pass says so;
        otherwise a second pass with independent masks gives the mask spread."""
        seed, model, data, n_full = run.options.seed, run.model(), run.eval_data, len(run.eval_data)
        use_loss = cmp.get("loss_dist") is not None
        st = run.engine.run_pass(model, data, rows, train_mode=True, torch_seed=seed, label="O101 train mode").scores
        same = s.subset(rows)  # eval mode on the same rows: what train mode is compared with
        loss_t, correct_t, mask_sd = st.loss, st.correct, 0.0
        if not np.array_equal(st.loss, same.loss):  # a second pass, independent masks: their spread
            st2 = run.engine.run_pass(model, data, rows, train_mode=True, torch_seed=seed + 1,
                                      label="O101 train mode").scores
            loss_t, correct_t = (st.loss + st2.loss) / 2, (st.correct + st2.correct) / 2
            mask_sd = float((st.loss - st2.loss).std(ddof=1)) if st.n > 1 else 0.0
            evidence["train_mode_mask_sd"] = num(mask_sd, 3)
        tr = self._paired(em, loss_t, same.loss, same.n_targets, s.n)
        # the logged value is one train-mode pass over the full set: its own mask noise
        tr["se_gap"] = math.hypot(tr["se_gap"], mask_sd / math.sqrt(2.0 * max(n_full, 1)))
        acc_t = self._paired(acc, correct_t, same.correct, same.n_targets, s.n, ("pooled", "example"))
        evidence.update({"train_mode_loss_token_mean": num(tr["token"], 6),
                         "train_mode_loss_example_mean": num(tr["example"], 6),
                         "train_mode_accuracy": num(acc_t["pooled"], 6)})
        if use_loss:
            logged = rec["loss"]
            d_train = self._distance(logged, tr)
            tol_train = self._loss_tol(logged, tr["se_gap"])
            separable = abs(tr["shift"]) > self._loss_tol(em["token"], tr["shift_se"])
        else:
            logged = rec[cmp["acc_key"]]
            d_train = self._interval_distance(logged, acc_t["pooled"], acc_t["example"])
            tol_train = self._acc_tol(acc_t["se_gap"])
            separable = abs(acc_t["shift"]) > self._acc_tol(acc_t["shift_se"])
        evidence["train_mode_distance"] = num(d_train, 4)
        evidence["train_mode_tolerance"] = num(tol_train, 4)
        evidence["train_mode_separable"] = bool(separable)
        if not separable:
            evidence["train_mode_note"] = (
                "train and eval mode give the same value (no active dropout/BN)" if mask_sd == 0.0 else
                f"train mode differs from eval mode by less than the noise of {rows.size} rows")
        if separable and d_train <= tol_train:
            which = "loss" if use_loss else cmp["acc_key"]
            return (
                f"It matches a TRAIN-mode evaluation ({which} {tr['token'] if use_loss else acc_t['pooled']:.4g}): "
                "dropout (or BatchNorm batch statistics) was active when the run evaluated, so its eval "
                "numbers are pessimistic and noisy.")
        return None

    def _max_others(self, run: "Run") -> int | None:
        cap = int(self.opts["max_other_checkpoints"])
        if run.budget.name == "fast":
            return min(cap, 1)
        if run.budget.name == "thorough":
            return None
        return cap

    def _other_checkpoints(self, run: "Run", ckpt: "Checkpoint") -> list["Checkpoint"]:
        limit = self._max_others(run)
        pool = [c for c in run.checkpoints if c.weights is not None
                and c.path.resolve() != ckpt.path.resolve()]
        # The reader lists the root final model instead of a checkpoint-N/ of the same step; that
        # checkpoint can hold different weights (load_best_model_at_end saves the best to the root).
        from degrade.run.run import Checkpoint
        known = {c.path.resolve() for c in pool} | {ckpt.path.resolve()}
        for child in sorted(run.path.glob("checkpoint-*")):
            m = re.fullmatch(r"checkpoint-(\d+)", child.name)
            c = Checkpoint(int(m.group(1)), child) if m and child.is_dir() else None
            if c is not None and c.path.resolve() not in known and c.weights is not None:
                try:
                    check_weights(c.weights)
                except InputError:
                    continue  # unreadable weights: not a candidate
                pool.append(c)
        pool.sort(key=lambda c: (abs(c.step - ckpt.step), -c.step))
        return pool if limit is None else pool[:limit]

    def _data_identity(self, run: "Run", rec: dict, set_name: str) -> dict[str, Any]:
        """Is the eval data the one the run used? The recorder's fingerprint, or the history's
        eval size (eval_runtime x eval_samples_per_second)."""
        out: dict[str, Any] = {}
        entry = ((run.manifest or {}).get("data") or {}).get("eval") or {}
        if entry.get("fingerprint_kind") == "examples" and entry.get("fingerprint"):
            out["recorded_eval_fingerprint_matches"] = entry["fingerprint"] == run.eval_data.fingerprint
        if rec.get("runtime") and rec.get("samples_per_second"):
            n_logged = float(rec["runtime"]) * float(rec["samples_per_second"])
            out["logged_eval_size_estimate"] = num(n_logged, 5)
            out["logged_eval_size_matches"] = abs(n_logged - len(run.eval_data)) <= max(2.0, 0.02 * n_logged)
        return out

    @staticmethod
    def _fix(explanation: str) -> str:
        return {
            "train_mode": "Evaluate under model.eval() (and torch.no_grad()): remove the model.train() "
                          "call from the evaluation path (custom prediction_step, callback, or an "
                          "evaluation hook), then re-run the evaluation.",
            "wrong_checkpoint": "Evaluate and save the same weights: check load_best_model_at_end, "
                                "which checkpoint the final evaluation loaded, and what save_model wrote.",
            "batch_dependent": "Fix the model so that each row's output depends on that row only: the "
                               "attention mask (padding), the softmax axis, any batch-level statistic.",
        }.get(explanation, "Evaluate with exactly the eval data and preprocessing used in training "
                           "(same rows, tokenizer, truncation, label masking), and report the plain "
                           "cross-entropy as the eval loss.")

    @staticmethod
    def _next(explanation: str) -> str:
        return {
            "train_mode": "Re-run trainer.evaluate() with model.eval() forced and compare with the logged "
                          "value: it should drop to the eval-mode number degrade recomputed.",
            "wrong_checkpoint": "Load each checkpoint, evaluate it, and line the values up against the "
                                "logged ones to see which weights each record came from.",
            "batch_dependent": "Score one eval row alone and inside batches of different sizes: the "
                               "outputs should be identical; the first layer where they differ is the bug.",
        }.get(explanation, "Evaluate the checkpoint with the training script's own eval dataloader and "
                           "diff its first batch (input_ids, labels) against the --eval-data you gave.")
