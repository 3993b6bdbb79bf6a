"""P404 for classifiers: the training labels are a different function of the input (a proxy).

A classifier learns the function its training labels are. When they are a proxy for what the eval
labels say (a labelling heuristic, a correlated attribute), a model that learned its training
labels perfectly is wrong wherever proxy and target disagree, and no amount of training fixes it.

Reading, with the same order-aware count baseline (logistic regression on words, adjacent pairs and
token precedence: degrade.probing.baselines.cls_order_rungs) fitted three ways on equally many
examples n and scored on one held-out half B of the eval sample:
  - within: fitted on the other eval half A with the eval labels -> how learnable the eval's
    question is from its inputs (random eval label errors are not: that is O104's case);
  - transfer: fitted on n training examples with the training labels -> what the training labels
    teach about the eval's question;
  - train within: fitted on half the training sample, scored on the other half with the training
    labels -> whether the training labels are a clean function (label noise is not: R205's case).
Proxy when within - transfer is >= min_proxy_gap beyond z SE (paired on B), the eval question is
learnable (within >= majority + min_proxy_gap), the training labels predict each other better than
they predict the eval labels (train within > transfer: they are a clean function of the input, only
a different one; random training-label noise does the opposite, since noisy held-out labels are
harder to predict than clean ones: measured on the bench's label-noise case, train within 0.59 vs
transfer 0.77), and the model is no better than what the training labels teach (its accuracy on B
< within - min_proxy_gap).
Equal n keeps "too little training data" (R208) from reading as a proxy.
"""
from __future__ import annotations

import math

import numpy as np

from degrade.check import CheckSkipped
from degrade.probing.baselines import cls_order_rungs, split_examples
from degrade.stats import num


def _fit_score(fit, fit_idx, score, score_idx, seed: int) -> np.ndarray:
    """Per-example correctness on score[score_idx] of the order-aware baseline fitted on fit[fit_idx]."""
    sub = split_examples(fit, fit_idx)
    _, aware = cls_order_rungs(sub, score, np.asarray(score_idx), max_train_examples=len(sub), seed=seed)
    return aware.correct


def proxy_label(check, run) -> list:
    o = check.opts
    train, eval_ = run.train_data, run.eval_data
    if train.label is None or eval_.label is None:
        raise CheckSkipped("classification model but the train or eval data has no integer labels")
    seed = run.options.seed
    rng = np.random.default_rng(seed)
    scores = run.eval_scores()
    idx = scores.indices[rng.permutation(scores.n)]
    half = len(idx) // 2
    A, B = idx[:half], idx[half:]
    n = min(len(A), len(train) // 2)
    if n < o["min_examples"] or len(B) < o["min_examples"]:
        raise CheckSkipped(f"{n} examples per fit, {len(B)} held out; at least {o['min_examples']} needed")
    tr = rng.permutation(len(train))
    within = _fit_score(eval_, A[:n], eval_, B, seed)
    transfer = _fit_score(train, tr[:n], eval_, B, seed)
    train_within = _fit_score(train, tr[:n], train, tr[n:2 * n], seed)
    y_B = np.asarray([eval_.label[int(i)] for i in B])
    majority = float(np.max(np.bincount(y_B)) / len(y_B))
    where = {int(i): k for k, i in enumerate(scores.indices)}
    model_B = scores.correct[[where[int(i)] for i in B]]
    d = within - transfer
    gap, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))
    g = o["min_proxy_gap"]
    w, t = float(within.mean()), float(transfer.mean())
    tw, m = float(train_within.mean()), float(model_B.mean())
    ev = {"task": "sequence-classification", "examples_per_fit": int(n),
          "held_out_eval_examples": int(len(B)),
          "baseline": "logistic regression on words, adjacent pairs and token precedence",
          "eval_labels_within_eval": num(w), "train_labels_to_eval": num(t),
          "train_labels_within_train": num(tw), "eval_majority": num(majority),
          "gap": num(gap), "gap_se": num(se), "model_accuracy_held_out": num(m)}
    proxy = (gap >= g and gap > o["z"] * se and w >= majority + g and tw > t and m < w - g)
    if not proxy:
        return []
    run.context.setdefault("axes", []).append(
        {"axis": "objective", "code": check.code, "kind": "proxy label", "gap": num(gap, 3)})
    return [check.finding(
        "error",
        f"The training labels are a different function of the input than the eval labels (a "
        f"proxy): a count baseline fitted on {n} eval examples predicts held-out eval labels with "
        f"accuracy {num(w, 3)}, the same baseline fitted on {n} training examples only {num(t, 3)} "
        f"(gap {num(gap, 3)} +- {num(se, 2)}), while the training labels predict each other "
        f"better ({num(tw, 3)} within the training data): clean, but another function. The model "
        f"reaches {num(m, 3)}: it learned what its labels asked, which is not what the eval measures.",
        confidence=0.65, evidence=ev,
        fix="Train on the labels the eval uses (or fix the labelling rule that produced the training "
            "labels); a proxy label caps the eval accuracy at its agreement with the target.",
        next_experiment="Relabel a few hundred training examples with the eval's rule and fine-tune: "
                        "the eval accuracy should move towards the within-eval baseline's.")]
