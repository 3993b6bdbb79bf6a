"""R205 train-label-noise: the training labels are noisy; the model disagrees with them."""
from __future__ import annotations

from typing import Any

import numpy as np

from degrade.check import Check, CheckSkipped
from degrade.checks.reachability import curves as C
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.confident import confident_joint
from degrade.run.tasks import TOKEN_TASKS


class TrainLabelNoise(Check):
    """A large share of the training labels is wrong: the final model agrees with held-out labels
    more than with its own training labels, or confidently predicts another label for many of them.

    What it detects: confident learning (Northcutt et al. 2021; cleanlab's find_label_issues,
    ANCHORS.md) on the training data with the final model: per class, the threshold is the mean
    predicted probability of that class over the targets labelled with it; a target is a suspect
    when another class clears its own threshold and is the most probable such class. The noise
    rate is the suspects' fraction. Works for sequence-classification labels and for causal-LM
    target tokens (each token a label).
      - error: the model agrees MORE with held-out labels than with its own training labels
        (eval accuracy - train accuracy against the given labels >= `min_agreement_gap`, beyond
        2 SE). That is the signature of noisy training labels by itself: a model that learned
        nothing or is still learning agrees with both alike, one that memorised agrees more with
        its own. The noise rate it implies, 1 - train/eval accuracy, is reported beside
        confident learning's count, which is a lower bound (it needs the model to contradict a
        label confidently; a model still learning does so without that confidence);
      - warning: noise rate >= `min_noise_rate`, the train loss has plateaued (its last third no
        longer falls: Mann-Kendall p > 0.01, or < 5% drop) at >= `min_plateau_loss`, but there
        is no eval data or no such agreement gap to confirm it;
      - nothing otherwise: below the rate; when the model disagrees with most labels (rate >=
        `max_noise_rate`) or only weakly (mean probability of the suggested label over the
        suspects < `min_suspect_confidence`), since a model that has not learned the task says
        nothing about its labels; or while the loss still falls (under-training, R201, explains
        a model that disagrees with its labels).

    Caveat: the probabilities are in-sample (the model trained on these labels). Confident learning
    wants out-of-sample probabilities; in-sample ones UNDER-estimate noise once the model starts
    memorising the wrong labels, so the rate is a lower bound and a memorised run reads clean.

    Why it matters: with a fraction r of labels flipped at random, the best reachable train loss
    is about the entropy of the noise, not 0, and the model is trained toward wrong answers; no
    architecture change can fix the data.

    Evidence used: the model, the training data, the eval data (for the agreement gap), the train
    loss curve.

    Fix: relabel or drop the suspect examples (evidence lists some), or train with a noise-robust
    loss (label smoothing, co-teaching); re-audit the labelling pipeline.
    """

    code, name, layer = "R205", "train-label-noise", Layer.REACHABILITY
    needs = frozenset({"model", "train_data"})
    tasks = frozenset({"causal-lm", "sequence-classification", "seq2seq"})
    requires_learning = True  # degrade/learned.py: skipped while the model has not learned
    options = (
        Option("min_noise_rate", 0.10,
               source="Northcutt et al. 2021 (confident learning; Pervasive Label Errors in Test Sets) "
                      "find >= 3.3% label errors in common test sets; 10% is three times that, well "
                      "beyond typical annotation",
               help="Estimated noise rate (the suspects' fraction) for a finding."),
        Option("max_noise_rate", 0.5,
               source="design choice: a model that disagrees with most labels has not learned the task "
                      "(R201/R206) and says nothing about its labels",
               help="At or above this noise rate there is no finding."),
        Option("min_plateau_loss", 0.1,
               source="arithmetic: the entropy of 2% of binary labels flipped is ~0.1 nats",
               help="The train-loss plateau must sit at least this high (nats)."),
        Option("plateau_p", 0.01,
               source="design choice: R201's max_slope_p (one-sided Mann-Kendall p 0.01: at most 1% of "
                      "pure-noise tails pass)",
               help="The last third of the train loss has plateaued when its falling trend has a "
                    "Mann-Kendall p above this (or it dropped by less than plateau_drop)."),
        Option("plateau_drop", 0.05,
               source='ANCHORS.md: "not decreasing: < 5% drop over a window"',
               help="The last third of the train loss has also plateaued when it dropped by less than "
                    "this fraction of its end level (see plateau_p)."),
        Option("min_agreement_gap", 0.1,
               source="arithmetic: with eval accuracy a <= 1, a gap of 0.1 implies that at least 10% "
                      "of the training targets (1 - train/eval) disagree with what the model learned, "
                      "min_noise_rate's level",
               help="Eval accuracy minus train accuracy (against the given labels) for an error: the "
                    "model agrees more with held-out labels than with its own training labels."),
        Option("min_suspect_confidence", 0.55,
               source="design choice: the model must prefer the suggested label over the given one by "
                      "more than a coin flip (0.5) on average over the suspects",
               help="Mean probability of the suggested label over the suspects below which there is "
                    "no finding."),
    )

    def run(self, run):
        o = self.opts
        model, data = run.model(), run.train_data
        if model.task not in TOKEN_TASKS and data.label is None:
            raise CheckSkipped("the training data has no class labels (`label` column)")
        cj = confident_joint(run.engine.train_pass().targets)
        if cj.n_targets == 0:
            raise CheckSkipped("the training data has no scored targets")
        ev: dict[str, Any] = {"targets_scored": cj.n_targets, "suspects": cj.n_suspects,
                              "noise_rate": C.num(cj.noise_rate, 3),
                              "train_accuracy_vs_given_labels": C.num(cj.accuracy, 3),
                              "suspect_examples": [{"example": e, "position": p, "given": g,
                                                    "suggested": s} for e, p, g, s in cj.suspects[:10]],
                              "probabilities": "in-sample (final model): a lower bound on noise"}
        ev["suspect_confidence"] = C.num(cj.suspect_confidence, 3)
        gap = se = eval_acc = None
        if run.eval_data is not None:
            es = run.eval_scores()
            eval_acc = es.accuracy
            gap = eval_acc - cj.accuracy
            se = np.sqrt(eval_acc * (1 - eval_acc) / max(int(es.n_targets.sum()), 1)
                         + cj.accuracy * (1 - cj.accuracy) / max(cj.n_targets, 1))
            ev.update({"eval_accuracy": C.num(eval_acc, 3), "agreement_gap": C.num(gap, 3),
                       "agreement_gap_se": C.num(se, 3)})
        fix = ("Relabel or drop the suspect examples (see evidence), or use a noise-robust loss "
               "(label smoothing, co-teaching); audit the labelling pipeline.")
        nxt = ("Relabel (or drop) 50 of the suspects by hand: if most are really wrong, retrain on "
               "the cleaned set and compare the eval metric beyond the seed noise.")
        # The model agreeing with clean held-out labels beyond noise more than with its own
        # training labels is the signature of noisy training labels by itself: a model that has
        # not learned, or is still learning, agrees with both alike, and one that memorised agrees
        # more with its own. It needs neither a plateau nor confident learning's count, which
        # flags only the targets the model contradicts with more confidence than it has on
        # average for that label (a model still learning contradicts wrong labels, but not that
        # confidently: the count is a lower bound, Northcutt et al. 2021).
        if gap is not None and gap >= o["min_agreement_gap"] and gap > 2 * se:
            implied = 1 - cj.accuracy / eval_acc  # eval_acc > gap >= min_agreement_gap > 0
            ev["noise_rate_implied_by_agreement"] = C.num(implied, 3)
            self._plateau(run, ev)  # for the evidence: the loss level noisy labels hold it at
            return [self.finding(
                "error",
                f"The model agrees with held-out labels (eval accuracy {ev['eval_accuracy']:.0%}) far "
                f"more than with its own training labels ({cj.accuracy:.0%}; gap {C.num(gap, 3)} +- "
                f"{C.num(2 * se, 2)}): about {implied:.0%} of the training targets look mislabelled "
                f"(1 - train/eval agreement; confident learning, which counts only targets the "
                f"model contradicts confidently, flags {cj.noise_rate:.0%}).",
                confidence=0.8, evidence=ev, fix=fix, next_experiment=nxt)]
        if cj.noise_rate < o["min_noise_rate"]:
            return []
        if cj.noise_rate >= o["max_noise_rate"] or cj.suspect_confidence < o["min_suspect_confidence"]:
            return []
        if not self._plateau(run, ev):
            return []
        msg = (f"Confident learning flags {cj.noise_rate:.0%} of the training targets "
               f"({cj.n_suspects} of {cj.n_targets}) as mislabelled: the final model confidently "
               f"predicts another label for them, and the train loss plateaued at "
               f"{ev['train_loss_end']}")
        msg += ("." if gap is None else f"; but it agrees no better with held-out labels "
                f"(eval {ev['eval_accuracy']:.0%} vs train {cj.accuracy:.0%}), so a model that has not "
                "learned the task explains it as well.")
        return [self.finding("warning", msg, confidence=0.4, evidence=ev, fix=fix, next_experiment=nxt)]

    def _plateau(self, run, ev) -> bool:
        if run.history is None:
            return False
        s, v = C.finite(*run.history.series("loss"))
        if s.size < 6:
            return False
        third = s.size // 3
        ts, tv = s[-third:], v[-third:]
        p = C.trend_p(ts, tv, "down")
        level = C.end_level(v)
        drop = (float(np.median(tv[: max(1, tv.size // 3)])) - level) / max(abs(level), 1e-12)
        ev.update({"train_loss_end": C.num(level, 3), "last_third_trend_p": C.num(p, 3),
                   "last_third_drop_fraction": C.num(drop, 3)})
        o = self.opts
        return level >= o["min_plateau_loss"] and (p > o["plateau_p"] or drop < o["plateau_drop"])
