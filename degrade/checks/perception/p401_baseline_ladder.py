"""P401 baseline-ladder: does the model beat count-based baselines fitted on its own train data?"""
from __future__ import annotations

from typing import Any

import numpy as np

from degrade.check import Check, CheckSkipped
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.baselines import Rung, lm_ladder
from degrade.run.tasks import TOKEN_TASKS
from degrade.stats import num, paired_difference


class BaselineLadder(Check):
    """The model does not beat n-gram / bag-of-words baselines fitted on its own training data.

    What it detects: count-based baselines are fitted on the train data and scored on exactly the
    eval examples and targets the model is scored on. Causal LM: unigram (add-k), bigram and
    trigram (Witten-Bell interpolation, backing off to lower orders), predicting each label from
    the input tokens before it (the logits at t predict the label at t+1). Classification:
    majority class, logistic regression on the bag of words ("unigram") and on words plus adjacent
    pairs ("bigram"). The model's per-example loss and accuracy are compared with the best rung's
    by paired per-example differences and their standard error (Miller 2024, "Adding Error Bars to
    Evals", via ANCHORS.md). The model "beats" the baselines when it is better on the loss OR on
    accuracy by more than `z` standard errors and by a practical margin.
    Readings:
      - error (confidence 0.8): the model is significantly WORSE than the best rung on the primary
        metric (loss for LMs, accuracy for classifiers): it has not even learned the n-gram
        statistics of its own training data;
      - error (0.65): it matches the best rung within noise, and the ladder is still improving at
        its top rung (the data has structure the counts keep finding);
      - warning (0.5): it matches the best rung within noise, but higher-order rungs stop helping
        (the ladder saturates): the data may hold nothing beyond n-gram statistics, in which case
        the baseline is the floor and the model is fine;
      - info: the model beats the ladder (the gap is reported).

    Why it matters: a transformer that does no better than counting pairs of tokens has learned
    nothing that needed a transformer. Because degrade walks O -> R -> I -> P and the outermost
    degraded layer is the verdict, this error decides only when the evaluation is sound (O),
    training reached what it could (R) and the code does what it says (I): then what is left is
    the hypothesis -- the architecture's inductive bias (positions, context, attention pattern)
    does not fit this data. When R or I is degraded, this finding is provisional and usually
    explained by them (an untrained model also fails this check).

    Evidence used: the model, the eval data (the examples Scores sampled under --budget) and the
    train data (up to the budget's max_train_examples). Evidence: each rung's loss and accuracy
    (the ladder), the model's, the best rung, the paired gain and its standard error, z.

    Fix: first rule out reachability (train longer or at another LR until the train loss falls
    clearly below the baseline's). If the model cannot get below the n-gram level even on its
    training data while training is healthy, change the hypothesis: longer context, a position
    scheme that fits the data, more layers for multi-step dependencies.
    """

    code, name, layer = "P401", "baseline-ladder", Layer.PERCEPTION
    needs = frozenset({"model", "eval_data", "train_data"})
    tasks = frozenset({"causal-lm", "sequence-classification", "seq2seq"})
    requires_learning = True  # degrade/learned.py: skipped while the model has not learned
    options = (
        Option("z", 2.0,
               source="statistical convention: about a two-sided 95% interval (1.96 SE)",
               help="Standard errors a paired difference must exceed to count as a difference."),
        Option("min_rel_gain", 0.02,
               source="design choice: a model 0.5% better than a trigram on a huge eval set is "
                      '"significantly" better but has learned next to nothing (a real LM beats a '
                      "trigram on text by tens of percent)",
               help="The loss gain must also exceed this fraction of the baseline's loss."),
        Option("min_acc_gain", 0.01,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.005) and doubled (0.02) give the same "
                      "verdicts and error codes",
               help="The accuracy gain (absolute) must also exceed this."),
        Option("max_order", 3,
               source="design choice: the key for a 4-gram overflows int64 for large vocabularies",
               help="Highest n-gram order of the LM baselines."),
        Option("min_examples", 20,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (10) and doubled (40) give the same "
                      "verdicts and error codes",
               help="Fewer scored eval examples than this: skipped."),
    )

    def run(self, run):
        o = self.opts
        model = run.model()
        lm = model.task in TOKEN_TASKS  # seq2seq: the baselines read the target prefix, not the source
        train, eval_ = run.train_data, run.eval_data
        if not lm and (train.label is None or eval_.label is None):
            raise CheckSkipped("classification model but the train or eval data has no integer labels")
        scores = run.eval_scores()
        if lm:
            vocab = getattr(getattr(model.module, "config", None), "vocab_size", None)
            rungs = lm_ladder(train, eval_, scores.indices, vocab_size=vocab, max_order=int(o["max_order"]),
                              max_train_examples=run.budget.max_train_examples, seed=run.options.seed)
        else:
            rungs = run.engine.cls_baselines()  # fitted once, shared with O104
        if not rungs:
            raise CheckSkipped("the train data holds no scored targets to fit baselines on")
        keep = scores.n_targets > 0
        if int(keep.sum()) < o["min_examples"]:
            raise CheckSkipped(f"{int(keep.sum())} scored eval example(s); at least {o['min_examples']} needed")
        m_loss, m_acc = scores.loss[keep], scores.correct[keep]
        w = scores.n_targets[keep]
        ladder = [self._rung_row(r, keep, w) for r in rungs]
        # the best rung on each metric (a rung with a lower loss is the stronger baseline)
        best_l = min(rungs, key=lambda r: float(r.loss[keep].mean()))
        best_a = max(rungs, key=lambda r: float(r.correct[keep].mean()))
        gain_l, se_l = paired_difference(best_l.loss[keep], m_loss)  # > 0: the model's loss is lower
        gain_a, se_a = paired_difference(m_acc, best_a.correct[keep])  # > 0: the model is more accurate
        base_loss = float(best_l.loss[keep].mean())
        beats_l = gain_l > o["z"] * se_l and gain_l > o["min_rel_gain"] * base_loss
        beats_a = gain_a > o["z"] * se_a and gain_a > o["min_acc_gain"]
        ev: dict[str, Any] = {
            "task": model.task, "examples": int(keep.sum()), "targets": int(w.sum()),
            "ladder": ladder,
            "model": {"loss": num(m_loss.mean()), "accuracy": num(m_acc.mean()),
                      "token_loss": num((m_loss * w).sum() / w.sum()),
                      "token_accuracy": num((m_acc * w).sum() / w.sum())},
            "best_rung_loss": best_l.name, "loss_gain": num(gain_l), "loss_gain_se": num(se_l),
            "loss_gain_z": num(gain_l / se_l) if se_l > 0 else None,
            "best_rung_accuracy": best_a.name, "accuracy_gain": num(gain_a),
            "accuracy_gain_se": num(se_a), "accuracy_gain_z": num(gain_a / se_a) if se_a > 0 else None,
            "baseline_details": {r.name: r.details for r in rungs},
            "note": "gains are model minus baseline on per-example means (loss: baseline - model); "
                    "losses in nats per target",
        }
        if beats_l or beats_a:
            what = []
            if beats_l:
                what.append(f"loss {ev['model']['loss']} vs {num(base_loss)} nats for the {best_l.name} "
                            f"({100 * gain_l / max(base_loss, 1e-12):.0f}% lower)")
            if beats_a:
                what.append(f"accuracy {ev['model']['accuracy']} vs {num(best_a.correct[keep].mean())} "
                            f"for the {best_a.name}")
            if not beats_l and gain_l < -o["z"] * se_l:
                what.append(f"but its loss is worse ({ev['model']['loss']} vs {num(base_loss)} for the "
                            f"{best_l.name}): over-confident where it is wrong")
            return [self.finding("info", "The model beats the count-based baselines fitted on its train "
                                 "data: " + "; ".join(what) + ".", confidence=0.9, evidence=ev)]

        # A ceiling is never an error (DESIGN.md §1): a model that gets (nearly) every target right
        # has nothing left to learn, whatever a count baseline also reaches.
        if float(m_acc.mean()) >= 0.999:
            return [self.finding("info", f"The model gets every target right (accuracy "
                                 f"{ev['model']['accuracy']}); the best count baseline reaches "
                                 f"{num(best_a.correct[keep].mean())}: the task is solved, at its ceiling.",
                                 confidence=0.9, evidence=ev)]

        # Which metric carries the verdict: loss for LMs, accuracy for classifiers.
        if lm:
            gain, se, best, metric = gain_l, se_l, best_l, "loss"
            m_val, b_val = num(m_loss.mean()), num(base_loss)
        else:
            gain, se, best, metric = gain_a, se_a, best_a, "accuracy"
            m_val, b_val = num(m_acc.mean()), num(best_a.correct[keep].mean())
        worse = gain < -o["z"] * se
        saturated, sat_note = self._saturation(rungs, keep, best, lm, o["z"])
        ev["ladder_saturates"] = saturated
        ev["saturation"] = sat_note
        unit = " nats per target" if metric == "loss" else ""
        compare = (f"eval {metric} {m_val} vs {b_val}{unit} for a {best.name} baseline fitted on the "
                   f"training data (gain {num(gain)} +- {num(se)})")
        if worse:
            sev, conf = "error", 0.8
            msg = (f"The model is worse than count-based baselines: {compare}. It has not learned even "
                   f"the {best.name} statistics of its own training data.")
        elif not saturated:
            sev, conf = "error", 0.65
            msg = (f"The model does no better than count-based baselines: {compare}, not beyond noise "
                   f"and the practical margin, while the data has more structure than the lower-order "
                   f"rungs see ({sat_note}).")
        else:
            sev, conf = "warning", 0.5
            msg = (f"The model only matches count-based baselines: {compare}, not beyond noise and the "
                   f"practical margin. Higher-order "
                   f"rungs do not help ({sat_note}): if the data holds nothing beyond {best.name} "
                   f"statistics this is the floor and the model is fine; otherwise it has learned "
                   f"nothing beyond them.")
        return [self.finding(
            sev, msg, confidence=conf, evidence=ev,
            fix="Rule out reachability first: train longer or at another learning rate until the "
                "train loss falls clearly below the baseline's. If a well-trained, correctly "
                "implemented model still cannot beat n-gram statistics, the hypothesis does not fit "
                "the data: give it the context, position scheme or depth the task's dependencies need.",
            next_experiment=f"Overfit a 512-example train subset: if the model's train {metric} goes "
                            f"well past the {best.name} baseline there but not on eval, the data or "
                            f"training is the limit; if it cannot get past it even on examples it "
                            f"has memorised the chance to, change the architecture (hypothesis).")]

    @staticmethod
    def _rung_row(r: Rung, keep: np.ndarray, w: np.ndarray) -> dict[str, Any]:
        loss, acc = r.loss[keep], r.correct[keep]
        return {"rung": r.name, "order": r.order, "loss": num(loss.mean()), "accuracy": num(acc.mean()),
                "token_loss": num((loss * w).sum() / w.sum()),
                "token_accuracy": num((acc * w).sum() / w.sum())}

    @staticmethod
    def _saturation(rungs: list[Rung], keep: np.ndarray, best: Rung, lm: bool, z: float) -> tuple[bool, str]:
        """Does the ladder stop improving below its top rung? (then the data may be n-gram-like)."""
        top = max(rungs, key=lambda r: r.order)
        by_order = sorted(rungs, key=lambda r: r.order)
        if best is not top:
            return True, f"the {best.name} is the best rung; the {top.name} does no better"
        below = by_order[-2] if len(by_order) >= 2 else None
        if below is None:
            return True, "only one rung"
        if lm:
            g, se = paired_difference(below.loss[keep], top.loss[keep])
        else:
            g, se = paired_difference(top.correct[keep], below.correct[keep])
        if g > z * se:
            return False, f"the {top.name} beats the {below.name} by {num(g)} +- {num(se)}"
        return True, f"the {top.name} beats the {below.name} only by {num(g)} +- {num(se)}"
