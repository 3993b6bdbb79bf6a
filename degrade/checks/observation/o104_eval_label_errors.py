"""O104 eval-label-errors: eval items whose label the model contradicts with high confidence."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from degrade.check import Check
from degrade.checks.observation._remap import best_remap
from degrade.checks.observation._stats import num, wilson
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.confident import confident_learning
from degrade.probing.targets import Targets, scored_eval_targets, vocab_problem

if TYPE_CHECKING:
    from degrade.run.run import Run


def _foreign_examples(train_tokens: set[int] | None, ev, example: np.ndarray) -> np.ndarray:
    """Per target: whether its example holds an input token that no training input holds."""
    if train_tokens is None:
        return np.zeros(example.size, bool)
    bad = {int(e) for e in np.unique(example) if not train_tokens.issuperset(ev.input_ids[int(e)])}
    return np.array([int(e) in bad for e in example], dtype=bool)


class EvalLabelErrors(Check):
    """Eval items whose given label the model contradicts with high confidence (label errors).

    What it detects: eval targets (a class label, or a causal LM's target token) that confident
    learning marks as probably mislabelled: the model puts more than its per-class mean self-
    confidence on another class. Lists the most suspect items (lowest probability of the given
    label) with the given and the predicted label, and estimates the metric on the rest.
    Why it matters: test sets carry label errors (3.3% on average across ten popular benchmarks,
    up to 10% on QuickDraw: Northcutt, Athalye & Mueller 2021, "Pervasive Label Errors in Test
    Sets"); a model that is right where the label is wrong is scored wrong, so a noisy eval set
    understates the model and ranks models wrongly.
    Evidence used: the chosen model's probabilities on a --budget sample of the eval set (eval
    items are out of sample, as confident learning requires); the same rule on an equally sized
    sample of the training data as a reference (the training labels the model learned from).
    Severity error only when all hold: the suspect fraction is at least error_fraction and at most
    max_suspect_fraction; the model is accurate on the remaining targets (min_clean_accuracy) and
    confident on nearly all targets (min_confident_share), so its contradictions are believable;
    its mean confidence on the suspects is at least min_confidence; the eval suspect fraction is
    train_ratio times the training one (the eval labels, not the task, are noisy); the suspects are
    not a systematic remapping (a permuted label mapping or shifted labels: O107's finding); they
    do not depend on input length (classification) or target position (LMs), and, for LMs, do not
    sit mostly at positions longer than any training example (truncation is O106's finding, a
    length failure perception's: label noise does not depend on the input); and, for classifiers,
    a count baseline fitted on the training data does not give the suspects' labels more often than
    it errs elsewhere (baseline_z: a predictor agrees with a wrong label only where it errs, so an
    independent predictor that reproduces the labels says they are right and the model, over-
    confident or memorising, is what is wrong: confident learning assumes calibrated probabilities).
    Targets whose given label never occurs as a training target, and targets of examples holding
    an input token no training input holds, are left out (O105/O106 report them).
    Fix: relabel or drop the suspect items (review the listed ones first); report the metric on the
    cleaned set next to the original.
    """

    code, name, layer = "O104", "eval-label-errors", Layer.OBSERVATION
    needs = frozenset({"model", "eval_data"})
    requires_learning = True  # degrade/learned.py: skipped while the model has not learned
    options = (
        Option("error_fraction", 0.10,
               source="Northcutt, Athalye & Mueller 2021 (Pervasive Label Errors in Test Sets): 3.3% "
                      "average test-set label errors; 0.10 is three times that",
               help="Suspect fraction for an error. A well-trained model on clean labels flags about "
                    "its confident error rate, which min_clean_accuracy keeps well below this."),
        Option("max_suspect_fraction", 0.5,
               source="Northcutt, Athalye & Mueller 2021: the worst test set they audit has ~10% label "
                      "errors; above half the labels are more wrong than right",
               help="Above this suspect fraction the labels are more wrong than right: a systematic "
                    "mapping fault (O107) or a model fault, not noise."),
        Option("min_clean_accuracy", 0.9,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.45): the same verdicts; doubled (capped "
                      "at 1.0): -1 right verdict, -1 error-code hit",
               help="The model must get at least this share of the non-suspect targets right for its "
                    "contradictions to be believed."),
        Option("min_confidence", 0.8,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.4): -2 right verdicts; doubled (capped "
                      "at 1.0): -5 right verdicts, -5 error-code hits",
               help="Mean probability of the predicted class on the suspects; also the probability "
                    "at which the model counts as confident on a target (min_confident_share)."),
        Option("min_confident_share", 0.9,
               source="DegradeBench v1 (the hand-built cases used in development): a model that learned "
                      "the task is confident on 96-98% of in-distribution targets on the healthy cases, "
                      "one that memorised a small training set on 72% (reach-tiny-data-copy)",
               help="The model must be confident (p >= min_confidence) on at least this share of the "
                    "eval targets it is judged on. Removing the suspects makes the accuracy on the rest "
                    "high by construction, so that alone cannot show the model learned the task."),
        Option("train_ratio", 3.0,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (1.5) and doubled (6.0) give the same "
                      "verdicts and error codes",
               help="The eval suspect fraction must be this multiple of the training one (else the "
                    "task, not the eval labels, is noisy)."),
        Option("length_z", 5.0,
               source="Bonferroni: under independence the largest of up to 200 split z's passes 5 with "
                      "probability < 200 * 5.7e-7 ~ 1e-4",
               help="Suspects depend on length when, at the length (LM: target position) split where "
                    "the suspect rates of the two sides differ most, the two-proportion z is at least "
                    "this (and the rates differ by length_rate_ratio)."),
        Option("length_rate_ratio", 3.0,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (1.5) and doubled (6.0) give the same "
                      "verdicts and error codes",
               help="Suspects depend on length only when, at that split, one side's suspect rate is "
                    "also at most 1/this of the other's (see length_z)."),
        Option("structure_auc", 0.625,
               source="deepchecks' default drift condition (drift score 2*AUC-1 >= 0.25, as O105); "
                      "DegradeBench v1 (development cases): AUC 0.49 on obs-label-noise-order (random "
                      "flips), 0.78 on perc-proxy-label-order (a proxy objective)",
               help="Label noise is independent of the input, so a cross-fitted classifier (token at "
                    "each of the first 32 positions, length; one row per example) cannot tell suspect "
                    "examples from the others (AUC 0.5). At least this AUC (with p < structure_p) means "
                    "the model follows another rule than the eval labels (a proxy objective, a task "
                    "mismatch): not label noise, so not an error here."),
        Option("structure_p", 1e-6,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (5e-07) and doubled (2e-06) give the same "
                      "verdicts and error codes",
               help="The p-value the suspects' input structure (structure_auc) must also beat."),
        Option("remap_share", 0.5,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.25) and doubled (capped at 1.0) give "
                      "the same verdicts and error codes",
               help="The disagreements are a systematic remapping (O107's finding, not label errors) "
                    "when the best out-of-sample remapping gains accuracy of at least this share of the "
                    "suspect fraction, at remap_z or more standard errors."),
        Option("remap_z", 4.0,
               source="design choice: O107's z_min (an out-of-sample gain of 4 SE, p ~ 6e-5, cannot "
                      "come from fitting a permutation to noise)",
               help="Standard errors the remapping's gain must reach to count as systematic (see "
                    "remap_share)."),
        Option("max_beyond_train_length", 0.5,
               source='design choice: "mostly" read as a majority of the suspects',
               help="LMs: at or above this share of suspects past the longest training example, the "
                    "suspects are a length failure (perception), not label noise."),
        Option("baseline_z", 2.0,
               source="statistical convention: about a one-sided 97.7% bound (2 SE)",
               help="Classification: when a count baseline fitted on the training data gives the "
                    "suspects' labels more often than its error rate elsewhere by this many standard "
                    "errors, the labels look right: not an error."),
        Option("max_listed", 10,
               source="design choice: report size, not a judgement",
               help="Suspect items listed in the evidence."),
    )

    def run(self, run: "Run") -> list:
        ev = run.eval_data
        t = scored_eval_targets(run)
        suspect, confident, thresholds = confident_learning(t)
        # A label training never had, or an input holding tokens training never saw, is O105's /
        # O106's finding (the eval asks for something else), not label noise: left out.
        tp = run.train_pass if run.train_data is not None else None
        seen = tp.targets if tp else None
        unseen_given = np.zeros(t.m, bool) if seen is None else np.array([int(g) not in seen for g in t.given])
        foreign = _foreign_examples(tp.input_tokens if tp else None, ev, t.example)
        unseen_given |= foreign
        n_unseen_suspects = int((suspect & unseen_given).sum())
        suspect = suspect & ~unseen_given
        k = int(suspect.sum())
        frac = k / t.m
        lo, hi = wilson(frac, t.m)
        clean = ~suspect & ~unseen_given
        acc_all = float(t.correct.mean())
        acc_clean = float(t.correct[clean].mean()) if clean.any() else float("nan")
        conf_suspects = float(t.p_pred[suspect].mean()) if k else 0.0
        ex_suspect = np.unique(t.example[suspect])
        in_scope = ~unseen_given
        confident_share = float((t.p_pred[in_scope] >= self.opts["min_confidence"]).mean()) if in_scope.any() else 0.0
        evidence: dict[str, Any] = {
            "task": t.task, "n_eval": len(ev), "n_examples_scored": int(t.indices.size),
            "n_targets_scored": t.m, "sampled": int(t.indices.size) < len(ev),
            "n_classes_with_threshold": len(thresholds),
            "suspect_targets": k, "suspect_fraction": num(frac, 4),
            "suspect_fraction_ci95": [round(lo, 4), round(hi, 4)],
            "suspect_examples": int(ex_suspect.size),
            "excluded_unseen_in_training": n_unseen_suspects,
            "mean_confidence_on_suspects": num(conf_suspects, 4),
            "confident_share": num(confident_share, 4),
            "accuracy_all": num(acc_all, 4), "accuracy_without_suspects": num(acc_clean, 4),
        }
        if k:
            evidence["most_suspect"] = self._listed(t, suspect)
        train_frac = self._train_reference(run, t)
        if train_frac is not None:
            evidence["train_suspect_fraction"] = num(train_frac, 4)
        remap = best_remap(t, run.options.seed) if k else None
        if remap is not None:
            evidence["systematic_remap"] = remap
        beyond = self._beyond_training_length(run, t, suspect)
        if beyond is not None:
            evidence["suspects_beyond_train_length"] = num(beyond, 3)
        along = self._length_dependence(ev, t, suspect, clean)
        if along is not None:
            evidence["suspects_by_length"] = along
        corroboration = self._baseline_agreement(run, t, suspect, clean)
        if corroboration is not None:
            evidence["baseline_on_suspects"] = corroboration

        reasons = []
        if frac < self.opts["error_fraction"]:
            reasons.append(f"suspect fraction {frac:.3f} < {self.opts['error_fraction']}")
        if not acc_clean >= self.opts["min_clean_accuracy"]:
            reasons.append(f"accuracy on the other targets {acc_clean:.3f} < {self.opts['min_clean_accuracy']}: "
                           "the model's contradictions are not reliable")
        if confident_share < self.opts["min_confident_share"]:
            reasons.append(f"the model is confident (p >= {self.opts['min_confidence']}) on only "
                           f"{100 * confident_share:.0f}% of eval targets: it has not learned the task well "
                           "enough for its disagreements to count against the labels")
        if frac > self.opts["max_suspect_fraction"]:
            reasons.append(f"more than {self.opts['max_suspect_fraction']:.0%} of labels contradicted: a "
                           "mapping fault (O107) or a model fault, not label noise")
        if conf_suspects < self.opts["min_confidence"]:
            reasons.append(f"mean confidence on suspects {conf_suspects:.3f} < {self.opts['min_confidence']}")
        if train_frac is not None and frac < self.opts["train_ratio"] * train_frac:
            reasons.append(f"the training data show a similar rate ({train_frac:.3f})")
        systematic = (remap is not None and (remap.get("gain") or 0) >= self.opts["remap_share"] * frac
                      and (remap.get("z") or 0) >= self.opts["remap_z"])
        if systematic:
            reasons.append(f"the disagreements are systematic ({remap['kind']}): see O107")
        if beyond is not None and beyond >= self.opts["max_beyond_train_length"]:
            reasons.append(f"{100 * beyond:.0f}% of suspects sit past the longest training example: "
                           "a length failure, not label noise")
        structure = self._input_structure(ev, t, suspect, in_scope, run.options.seed)
        if structure is not None:
            evidence["suspects_predictable_from_input"] = structure
            if (structure["auc"] >= self.opts["structure_auc"]
                    and structure["p_value"] < self.opts["structure_p"]):
                reasons.append(f"which items are contradicted is predictable from the input (cross-fitted "
                               f"AUC {structure['auc']}, driven by {structure['drivers'][0]['feature']}): "
                               "the model follows a rule other than the eval labels' (a training "
                               "objective that differs from the evaluated one: perception), not "
                               "random label noise")
        if along is not None and along["z"] >= self.opts["length_z"] and (
                min(along["rate_low_side"], along["rate_high_side"])
                <= max(along["rate_low_side"], along["rate_high_side"]) / self.opts["length_rate_ratio"]):
            reasons.append(f"the suspects depend on input length ({along['split']}: rates "
                           f"{along['rate_low_side']} vs {along['rate_high_side']}, z={along['z']}): a "
                           "failure along length (truncation, extrapolation), not random label noise")
        if corroboration is not None and corroboration["z"] >= self.opts["baseline_z"]:
            reasons.append(f"a {corroboration['baseline']} baseline fitted on the training data gives the "
                           f"suspects' labels {corroboration['agrees_on_suspects']:.0%} of the time, more "
                           f"than it could if they were wrong (it errs on {corroboration['errs_elsewhere']:.0%} "
                           "of the other items): the labels look right, the model's confident "
                           "contradictions are its own errors (over-confidence, memorisation)")
        evidence["not_an_error_because"] = reasons

        what = "targets" if t.task == "causal-lm" else "items"
        msg = (f"{k} of {t.m} eval {what} ({100 * frac:.1f}%, 95% CI {100 * lo:.1f}-{100 * hi:.1f}%) have a "
               f"label the model confidently contradicts (confident learning; mean confidence "
               f"{conf_suspects:.2f}). Accuracy {acc_all:.3f} on all, {acc_clean:.3f} without them.")
        if int(t.indices.size) < len(ev):
            msg += f" {t.indices.size} of {len(ev)} eval examples were scored."
        if not reasons:
            return [self.finding(
                "error", msg + " The eval labels, not the model, look wrong for these items.",
                confidence=0.8 if frac >= 2 * self.opts["error_fraction"] else 0.65, evidence=evidence,
                fix="Review the listed items; relabel or drop the wrong ones and report the metric on "
                    "the cleaned eval set next to the original.",
                next_experiment=f"Re-label the {min(k, self.opts['max_listed'])} most suspect items by hand: "
                                "if most labels are wrong, clean the whole eval set and re-evaluate.")]
        # A model that has not learned the task says nothing about the labels: info, not warning.
        learned = (confident_share >= self.opts["min_confident_share"]
                   and acc_clean >= self.opts["min_clean_accuracy"])
        severity = "warning" if frac >= self.opts["error_fraction"] and k and learned else "info"
        return [self.finding(
            severity, msg + (" Not an error: " + "; ".join(reasons) + "." if reasons and k else ""),
            confidence=0.5 if severity == "warning" else 0.7, evidence=evidence,
            fix="Review the most suspect items listed in the evidence." if k else "Nothing to fix.",
            next_experiment="Hand-check the listed items; if their labels are right, the model's errors "
                            "belong to the other layers." if k else "None needed.")]

    def _listed(self, t: Targets, suspect: np.ndarray) -> list[dict[str, Any]]:
        order = np.flatnonzero(suspect)[np.argsort(t.p_given[suspect], kind="stable")]
        out = []
        for j in order[: self.opts["max_listed"]]:
            row = {"index": int(t.example[j]), "given_label": int(t.given[j]),
                   "predicted_label": int(t.pred[j]), "confidence": num(t.p_pred[j], 3),
                   "p_given_label": num(t.p_given[j], 3)}
            if t.task == "causal-lm":
                row["position"] = int(t.position[j])
            out.append(row)
        return out

    def _train_reference(self, run: "Run", t: Targets) -> float | None:
        tr = run.train_data
        if tr is None or vocab_problem(run, tr) is not None:
            return None
        tt = run.engine.train_pass().targets
        if tt.m < 20:
            return None
        return float(confident_learning(tt)[0].mean())

    @staticmethod
    def _baseline_agreement(run: "Run", t: Targets, suspect: np.ndarray, clean: np.ndarray) -> dict | None:
        """Classification: how often the best count baseline fitted on the training data (P401's
        ladder, not P401's output) gives the suspects' labels, against how often it errs on the
        other items. A predictor can only agree with a wrong label where it errs, so agreement on
        the suspects well above its error rate elsewhere says their labels are right. None for
        LMs (count baselines of algorithmic or long-range text are too weak to test this) or
        without training data."""
        if t.task == "causal-lm" or run.train_data is None or suspect.sum() < 5 or clean.sum() < 5:
            return None
        row = {int(i): k for k, i in enumerate(run.eval_scores().indices)}  # the baselines' rows
        at = np.asarray([row[int(e)] for e in t.example])
        best = max(run.engine.cls_baselines(), key=lambda r: float(r.correct[at][clean].mean()))
        correct = best.correct[at]
        agree, err = float(correct[suspect].mean()), 1 - float(correct[clean].mean())
        se = np.sqrt(agree * (1 - agree) / suspect.sum() + err * (1 - err) / clean.sum())
        return {"baseline": best.name, "agrees_on_suspects": round(agree, 4), "errs_elsewhere": round(err, 4),
                "z": round(float((agree - err) / max(se, 1e-12)), 2)}

    @staticmethod
    def _input_structure(ev, t: Targets, suspect: np.ndarray, in_scope: np.ndarray, seed: int) -> dict | None:
        """Can a classifier tell suspect examples (holding a suspect target) from the others by
        their input? Features: which token (hashed to 32 buckets for large vocabularies) sits at
        each of the first 32 positions, and the length. One row per example, so that the targets
        of one example never sit on both sides of the cross-fitting (O105's test)."""
        from degrade.probing.shift import domain_test
        examples = np.unique(t.example[in_scope])
        bad = set(t.example[suspect & in_scope].tolist())
        sus = np.array([int(e) in bad for e in examples])
        if sus.sum() < 10 or (~sus).sum() < 10:
            return None
        top = max((max(x) for x in ev.input_ids if x), default=0)
        width, P = (top + 1 if top < 32 else 32), 32
        X = np.zeros((examples.size, P * width + 1))
        names = [f"token {'' if top < 32 else 'bucket '}{v} at position {p}" for p in range(P) for v in range(width)]
        names += ["length"]
        for r, e in enumerate(examples):
            ids = np.asarray(ev.input_ids[int(e)][:P], dtype=np.int64)
            vals = ids if top < 32 else (ids * 2654435761) % 32
            X[r, np.arange(ids.size) * width + vals] = 1.0
            X[r, -1] = len(ev.input_ids[int(e)])
        test = domain_test(X[~sus], X[sus], names, seed, top=3)
        return {"auc": test["auc"], "p_value": test["p_value"], "n_examples": int(examples.size),
                "n_suspect_examples": int(sus.sum()), "drivers": test["drivers"]}

    @staticmethod
    def _length_dependence(ev, t: Targets, suspect: np.ndarray, clean: np.ndarray) -> dict | None:
        """The split of input length (classification) or target position (LM) where the suspect
        rates of the two sides differ most (two-proportion z). Label noise does not depend on the
        input; a failure along length (truncation, extrapolation) does."""
        if suspect.sum() < 5 or clean.sum() < 5:
            return None
        x = (t.position if t.task == "causal-lm"
             else np.array([len(ev.input_ids[int(e)]) for e in t.example]))
        keep = suspect | clean
        x, y = x[keep], suspect[keep].astype(float)
        best = None
        for cut in np.unique(x)[:-1][:200]:
            lo, hi = y[x <= cut], y[x > cut]
            p = y.mean()
            se = np.sqrt(p * (1 - p) * (1 / lo.size + 1 / hi.size))
            if se <= 0:
                continue
            z = abs(hi.mean() - lo.mean()) / se
            if best is None or z > best["z"]:
                best = {"split": f"<= {int(cut)} vs > {int(cut)}", "rate_low_side": round(float(lo.mean()), 4),
                        "rate_high_side": round(float(hi.mean()), 4), "z": round(float(z), 2)}
        return best

    @staticmethod
    def _beyond_training_length(run: "Run", t: Targets, suspect: np.ndarray) -> float | None:
        if t.task != "causal-lm" or run.train_data is None or not suspect.any():
            return None
        longest = run.train_pass.max_length
        return float((t.position[suspect] >= longest).mean())
