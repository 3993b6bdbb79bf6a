"""O107 latent-capability: the model knows answers that the argmax metric does not credit."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from degrade.check import Check
from degrade.checks.observation._remap import best_remap
from degrade.checks.observation._stats import num
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.targets import scored_eval_targets

if TYPE_CHECKING:
    from degrade.run.run import Run


class LatentCapability(Check):
    """The model ranks the reference answer highly, or gets it under a systematic remapping, but
    the argmax metric does not credit it.

    What it detects: the eval set scored two ways: (1) by the likelihood and rank of the reference
    answer (top-1, top-k, mean reciprocal rank, mean log-probability, against chance k/classes),
    and (2) by argmax, as the run's accuracy is computed; plus the out-of-sample gain of a
    systematic remapping of labels: a permutation of label ids (fitted on half of the targets,
    scored on the other half) and, for causal LMs, labels aligned one position off (argmax at t vs
    label at t or t+2 instead of t+1). A large gain means the model produces the right answer and
    the evaluation compares it with the wrong label: a label-id mapping permuted between training
    and evaluation, labels shifted once too often, a formatting or tokenisation change of answers.
    Why it matters: the metric then measures the evaluation pipeline, not the model; blaming
    training, code or architecture for it sends the user the wrong way.
    Evidence used: the chosen model's probabilities on a --budget sample of the eval set (the
    same pass as O104).
    Severity: error when a remapping raises accuracy by at least min_gain, at least z_min standard
    errors of the paired per-target difference, to at least min_remapped_accuracy (a permutation
    must also move at least one label the same way in both folds); warning when
    the reference is in the top-k for at least topk_warning of targets while top-1 is lower by at
    least topk_gap and k/classes is at most 0.25 (the model "knows" more than argmax shows: a
    decoding or formatting question); info otherwise.
    Fix: use the same label mapping (id2label / label2id), label alignment and answer formatting
    in evaluation as in training; compare answers after normalisation.
    """

    code, name, layer = "O107", "latent-capability", Layer.OBSERVATION
    needs = frozenset({"model", "eval_data"})
    options = (
        Option("min_gain", 0.2,
               source="design choice: a gain of 20 points out of sample cannot come from fitting a "
                      "permutation to noise",
               help="Accuracy gain (absolute, on the held-out half) a remapping of labels must reach "
                    "for an error."),
        Option("z_min", 4.0,
               source="design choice: 4 standard errors (p ~ 6e-5) out of sample cannot come from "
                      "fitting a permutation to noise",
               help="Standard errors of the paired per-target difference the remapping's gain must "
                    "reach."),
        Option("min_remapped_accuracy", 0.5,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.25) and doubled (capped at 1.0) give "
                      "the same verdicts and error codes",
               help="Accuracy the remapped predictions must reach for an error."),
        Option("k", 5,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (2) and doubled (10) give the same "
                      "verdicts and error codes",
               help="The reference counts as ranked highly when it is in the model's top k."),
        Option("topk_warning", 0.9,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.45) and doubled (capped at 1.0) give "
                      "the same verdicts and error codes",
               help="Warning when the reference is in the top k for at least this share of targets "
                    "(while top-1 is lower by topk_gap and k/classes is at most max_chance_k)."),
        Option("topk_gap", 0.4,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.2) and doubled (0.8) give the same "
                      "verdicts and error codes",
               help="How much lower top-1 accuracy must be than top-k for the warning."),
        Option("max_chance_k", 0.25,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.125) and doubled (0.5) give the same "
                      "verdicts and error codes",
               help="The top-k warning needs k/classes (the chance of the top k) at most this: with "
                    "few classes a high top-k accuracy says nothing."),
    )

    def run(self, run: "Run") -> list:
        ev = run.eval_data
        t = scored_eval_targets(run)
        k = int(self.opts["k"])
        top1 = float((t.rank == 1).mean())
        topk = float((t.rank <= k).mean())
        chance_k = min(1.0, k / max(t.n_classes, 1))
        evidence: dict[str, Any] = {
            "task": t.task, "n_examples_scored": int(t.indices.size), "n_targets_scored": t.m,
            "sampled": int(t.indices.size) < len(ev), "n_classes": t.n_classes,
            "argmax_accuracy": num(top1, 4), f"top{k}_accuracy": num(topk, 4),
            f"chance_top{k}": num(chance_k, 4),
            "mean_reciprocal_rank": num(float((1.0 / t.rank).mean()), 4),
            "mean_logprob_reference": num(float(np.log(np.maximum(t.p_given, 1e-30)).mean()), 4),
            "median_rank_reference": float(np.median(t.rank)),
        }
        remap = best_remap(t, run.options.seed)
        if remap is not None:
            evidence["best_remap"] = remap
        gain, z = (remap or {}).get("gain") or 0.0, (remap or {}).get("z") or 0.0
        remapped = (remap or {}).get("remapped_accuracy") or 0.0
        # A permutation is systematic only when its two folds agree on a moved label: fits that
        # disagree (each half swapping differently) are noise fitted twice, not a mapping.
        stable = remap is None or remap["kind"] != "label permutation" or remap["n_stable_moved_labels"] > 0
        if stable and gain >= self.opts["min_gain"] and z >= self.opts["z_min"] \
                and remapped >= self.opts["min_remapped_accuracy"]:
            what = (f"labels aligned at offset {remap['best_offset']} instead of 1"
                    if remap["kind"] == "label alignment"
                    else f"a permutation of {remap['n_stable_moved_labels']} label id(s), e.g. "
                         f"{dict(list(remap['stable_moved_labels'].items())[:4])} (given -> predicted)")
            return [self.finding(
                "error",
                f"The model knows answers the metric does not credit: argmax accuracy {remap['plain_accuracy']}, "
                f"but {remap['remapped_accuracy']} under {what} (held-out half, +{gain:.2f}, z={z}). "
                "The evaluation compares predictions with systematically wrong labels.",
                confidence=0.85, evidence=evidence,
                fix="Use the training label mapping (id2label/label2id), label alignment and answer "
                    "format in evaluation; check the eval preprocessing against the training one.",
                next_experiment="Re-evaluate with the remapping applied (or the eval labels rebuilt by "
                                "the training preprocessing): the metric should jump to the remapped value.")]
        if (topk >= self.opts["topk_warning"] and top1 <= topk - self.opts["topk_gap"]
                and chance_k <= self.opts["max_chance_k"]):
            return [self.finding(
                "warning",
                f"The reference is in the model's top {k} for {100 * topk:.0f}% of targets (chance "
                f"{100 * chance_k:.0f}%) but argmax gets only {100 * top1:.0f}%: the model ranks the "
                "answer highly without producing it.", confidence=0.5, evidence=evidence,
                fix="Look at what argmax prefers over the reference (formatting tokens, a frequent "
                    "competitor); score by likelihood of normalised answers, or train longer.",
                next_experiment="List the top-3 predictions for 20 misses: a recurring competitor "
                                "points to formatting/decoding, scattered ones to an under-trained model.")]
        return [self.finding(
            "info", f"Argmax accuracy {top1:.3f}; the reference is in the top {k} for {topk:.3f} "
            f"(chance {chance_k:.3f}); no remapping of labels helps "
            f"(best gain {gain:+.2f}). The metric credits what the model knows.",
            confidence=0.7, evidence=evidence, fix="Nothing to fix.", next_experiment="None needed.")]
