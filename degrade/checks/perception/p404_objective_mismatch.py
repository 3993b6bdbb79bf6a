"""P404 objective-mismatch: training's loss never asked for what the evaluation scores."""
from __future__ import annotations

from typing import Any

import numpy as np

from degrade.check import Check, CheckSkipped
from degrade.learned import require
from degrade.layers import Layer
from degrade.option import Option
from degrade.checks.perception._proxy_label import proxy_label
from degrade.probing.baselines import lm_ladder
from degrade.run.data import IGNORE_INDEX, Examples
from degrade.run.tasks import CAUSAL_LM
from degrade.stats import num, paired_difference


def target_slots(examples: Examples, i: int, n_slots: int) -> np.ndarray:
    """The slots of example i's scored targets: the target's position relative to the sequence's
    length, in n_slots equal bins (the label at t >= 1 is predicted from input_ids[:t]). Relative,
    not absolute, so that "the answer half of a sequence" is the same slot at every length."""
    lab = np.asarray(examples.token_labels(i))
    t = np.nonzero(lab != IGNORE_INDEX)[0]
    t = t[t >= 1]
    return np.minimum((n_slots * t) // max(len(lab), 1), n_slots - 1)


def slot_histogram(examples: Examples, indices, n_slots: int) -> np.ndarray:
    h = np.zeros(n_slots)
    for i in indices:
        h += np.bincount(target_slots(examples, int(i), n_slots), minlength=n_slots)
    return h


class ObjectiveMismatch(Check):
    """Training's objective never asked for what the eval scores: loss elsewhere, or a proxy label.

    What it detects: where the loss sat in training against where the eval scores. Every scored
    target (label != -100) has a slot: its position relative to its sequence's length, in
    `n_slots` bins ("the first half", "the last token"). Only eval examples no longer than the
    longest training sequence are read: longer ones fail for P402's reason (lengths or positions
    never trained), whatever the objective. From the train data's labels, the share
    of all training targets in each slot; a slot is *trained* when it holds at least
    `min_slot_share` of them. An eval target in an untrained slot is one training never put a loss
    on, although the train sequences hold those positions as inputs (an LM trained on its prompts
    only, answers masked out; a loss mask on the wrong span). Three things together:
      1. at least `min_untrained_share` of the scored eval targets lie in untrained slots;
      2. the eval's target tokens are in the training inputs (>= `min_token_coverage` of them)
         and were training targets somewhere (fewer than `max_unseen_targets` never were): the
         model saw what it is asked to produce, so the data was there and only the objective did
         not ask for it there;
      3. the model fails on them: on the eval examples whose targets are mostly untrained, it does
         not beat the best count baseline fitted on the train data (P401's ladder: unigram..
         trigram), neither on the loss (by `z` SE and `min_rel_gain` of the baseline's loss)
         nor on accuracy (by `z` SE and `min_acc_gain`): P401's reading, restricted to the
         targets training never asked for. A model that beats them there learned the ability
         anyway (transfer), and P404 stays quiet.
    Readings: all three: error (confidence 0.7), axis "objective" published to
    run.context["axes"]; 1 and 2 but the model beats the baselines there:
    info (the ability transferred without being asked for).

    Classifiers (a proxy label, degrade/checks/perception/_proxy_label.py): the same order-aware
    count baseline is fitted on n eval examples (eval labels), on n training examples (training
    labels) and on n training examples scored within the training data, and scored on held-out
    eval examples. Error (confidence 0.65, axis "objective", kind "proxy label") when the eval
    labels are learnable from their inputs (within >= majority + `min_proxy_gap`), the training
    labels teach at least `min_proxy_gap` less about them (beyond `z` SE, paired), the training
    labels predict each other better than they predict the eval labels (a clean but different
    function; random label noise does the opposite: R205's case), and the model is no better
    than what its labels teach. Equal n for every fit
    keeps "too little training data" from reading as a proxy; random eval label errors are not
    learnable within the eval (O104's case).

    Versus O105 (eval targets that training never asked for, observation layer): O105 is about
    an evaluation that measures something absent from the training data's targets: outputs no
    training target ever held, a scored span that is not part of the task. The eval is the
    wrong question. P404 is when the eval is the right question, its answers are tokens training
    saw, in sequences of the form training had, but training's loss was placed elsewhere: the
    hypothesis "learning the masked-in part teaches the rest" is wrong. Condition 2 separates
    them: P404 stays quiet when `max_unseen_targets` (O105's unseen_error_fraction, 5%) or more
    of the eval's target tokens never were a training target, which is O105's case, so the two
    never fire on the same run.

    Why it matters: a model learns what its loss asks for. No amount of training, data of the same
    kind or capacity teaches an ability the objective never rewards; an eval of that ability
    reads as a dead model while the training curve looks fine.

    Evidence used: the train and eval data's labels (slots, target tokens), the model's
    per-example scores on the eval data, and count baselines fitted on the train data.
    Evidence: the slot histograms of train and eval targets, the untrained share, the token
    coverage, the model's and the best baseline's loss and accuracy on untrained-slot examples
    (and on trained-slot ones), the paired gain and its SE. Classifiers: the three baseline
    accuracies (within eval, train to eval, within train), the eval majority, the gap and its SE,
    the model's held-out accuracy.

    Fix: train with the eval's objective: put the loss on the targets the eval scores (fix the
    label mask, or add those targets to the training labels), then re-evaluate.
    """

    code, name, layer = "P404", "objective-mismatch", Layer.PERCEPTION
    needs = frozenset({"model", "eval_data", "train_data"})
    publishes_axes = True
    options = (
        Option("n_slots", 10,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (5) and doubled (20) give the same "
                      "verdicts and error codes",
               help="Relative-position bins a target's slot is read in."),
        Option("min_slot_share", 0.01,
               source="design choice: a stray target or two is not training a slot",
               help="A slot holding less than this share of the training targets counts as untrained."),
        Option("min_untrained_share", 0.5,
               source="design choice: at least half the eval asks for what training did not",
               help="Share of the scored eval targets in untrained slots needed."),
        Option("example_untrained_share", 0.5,
               source="design choice: \"mostly untrained\" read as a majority of the example's targets",
               help="An eval example whose share of targets in untrained slots is at least this is "
                    "one where the model is compared with the baselines."),
        Option("min_token_coverage", 0.9,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.45) and doubled (capped at 1.0) give "
                      "the same verdicts and error codes",
               help="Share of eval target tokens that must occur among the training inputs."),
        Option("max_unseen_targets", 0.05,
               source="O105's unseen_error_fraction (5%), so that P404 and O105 never fire on the same "
                      "run",
               help="At or above this share of eval target tokens that never were a training target, "
                    "the run is O105's (observation) and P404 stays quiet."),
        Option("z", 2.0,
               source="statistical convention: about a two-sided 95% interval (1.96 SE)",
               help="Standard errors a paired gain must exceed."),
        Option("min_rel_gain", 0.02,
               source="P401's margin (its min_rel_gain)",
               help="The model must also beat the baseline by this fraction of its loss."),
        Option("min_acc_gain", 0.01,
               source="P401's margin (its min_acc_gain)",
               help="Or the model must beat the baseline's accuracy by this much (absolute), beyond "
                    "z SE."),
        Option("min_proxy_gap", 0.1,
               source="design choice: a tenth of the accuracy is far outside the noise of a few hundred "
                      "held-out examples (SE ~0.02-0.03)",
               help="Classifiers: accuracy gap (absolute) between the baseline fitted on the eval's "
                    "labels and on the training labels, and between that and the model."),
        Option("min_examples", 20,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (10) and doubled (40) give the same "
                      "verdicts and error codes",
               help="Fewer untrained-slot eval examples (classifiers: examples per fit or held out) "
                    "than this: skipped."),
    )

    def run(self, run):
        o = self.opts
        model = run.model()
        train, eval_ = run.train_data, run.eval_data
        if model.task != CAUSAL_LM:
            # "The model learned what its labels asked" needs a model that learned something;
            # where the objective never covers the eval's targets (below), the data says so alone.
            require(run)
            return proxy_label(self, run)
        S = int(o["n_slots"])
        tr_idx = self._train_sample(run, len(train))
        tr_hist = slot_histogram(train, tr_idx, S)
        if tr_hist.sum() == 0:
            raise CheckSkipped("the train data holds no scored targets")
        trained = tr_hist / tr_hist.sum() >= o["min_slot_share"]
        scores = run.eval_scores()
        # Like with like: eval examples longer than any training sequence fail for P402's reason
        # (positions or lengths never trained), whatever the objective; they are left out here.
        max_len = max(len(train.input_ids[int(i)]) for i in tr_idx)
        in_range = scores.lengths <= max_len
        per_ex = [target_slots(eval_, int(i), S) if ok else np.zeros(0, int)
                  for i, ok in zip(scores.indices, in_range)]
        n_tgt = np.asarray([s.size for s in per_ex], dtype=float)
        untrained_frac = np.asarray([float((~trained[s]).mean()) if s.size else 0.0 for s in per_ex])
        share = float((untrained_frac * n_tgt).sum() / max(n_tgt.sum(), 1))
        ev_hist = slot_histogram(eval_, scores.indices, S)
        ev: dict[str, Any] = {
            "slots": S, "train_target_share_by_slot": [num(x, 3) for x in tr_hist / tr_hist.sum()],
            "eval_target_share_by_slot": [num(x, 3) for x in ev_hist / max(ev_hist.sum(), 1)],
            "trained_slots": [int(k) for k in np.nonzero(trained)[0]],
            "longest_train_sequence": int(max_len),
            "eval_examples_longer_left_out": int((~in_range).sum()),
            "eval_targets_in_untrained_slots": num(share, 3)}
        if share < o["min_untrained_share"]:
            return []
        coverage, unseen = self._token_coverage(train, tr_idx, eval_, scores.indices)
        ev["eval_target_tokens_in_train_inputs"] = num(coverage, 3)
        ev["eval_target_tokens_never_a_train_target"] = num(unseen, 3)
        if coverage < o["min_token_coverage"] or unseen >= o["max_unseen_targets"]:
            return []  # the eval asks for outputs training never had as targets: O105's question
        bad = (untrained_frac >= o["example_untrained_share"]) & (n_tgt > 0)
        good = ~bad & (n_tgt > 0)
        if int(bad.sum()) < o["min_examples"]:
            raise CheckSkipped(f"{int(bad.sum())} eval example(s) with mostly untrained targets; "
                               f"at least {o['min_examples']} needed")
        fails, detail = self._fails(run, model, train, eval_, scores, bad, good, ev)
        if not fails:
            return [self.finding(
                "info", f"{num(100 * share, 3)}% of the eval's targets sit where training put no "
                        f"loss, but the model handles them ({detail}): the ability transferred.",
                confidence=0.5, evidence=ev)]
        run.context.setdefault("axes", []).append(
            {"axis": "objective", "code": self.code, "eval_targets_in_untrained_slots": num(share, 3),
             "trained_slots": ev["trained_slots"]})
        return [self.finding(
            "error",
            f"Training never asked for what the eval scores: {num(100 * share, 3)}% of the eval's "
            f"targets sit in parts of the sequence (relative position slots "
            f"{self._slots_text(~trained & (ev_hist > 0), S)}) where the training labels put no "
            f"loss, although those tokens were in the training inputs; there the model {detail}. "
            f"The objective, not the training, is what misses the eval's ability.",
            confidence=0.7, evidence=ev,
            fix="Train with the eval's objective: put the loss on the targets the eval scores (fix "
                "the label mask, or add them to the training labels).",
            next_experiment="Retrain for the same steps with labels on the eval's target positions "
                            "(e.g. labels = input_ids on the answer span) and compare the eval "
                            "accuracy on those targets.")]

    def _fails(self, run, model, train, eval_, scores, bad, good, ev) -> tuple[bool, str]:
        o = self.opts
        vocab = getattr(getattr(model.module, "config", None), "vocab_size", None)
        rungs = lm_ladder(train, eval_, scores.indices, vocab_size=vocab,
                          max_train_examples=run.budget.max_train_examples, seed=run.options.seed)
        if not rungs:
            raise CheckSkipped("no baselines could be fitted on the train data")
        best = min(rungs, key=lambda r: float(r.loss[bad].mean()))
        m_loss, m_acc = scores.loss[bad], scores.correct[bad]
        gain, se = paired_difference(best.loss[bad], m_loss)
        best_a = max(rungs, key=lambda r: float(r.correct[bad].mean()))
        gain_a, se_a = paired_difference(m_acc, best_a.correct[bad])
        base = float(best.loss[bad].mean())
        # "beats" as in P401: better on the loss OR on accuracy, beyond noise and a practical margin
        beats = (gain > o["z"] * se and gain > o["min_rel_gain"] * base) or \
                (gain_a > o["z"] * se_a and gain_a > o["min_acc_gain"])
        ev["untrained_slot_examples"] = {
            "examples": int(bad.sum()), "model_loss": num(m_loss.mean()), "model_accuracy": num(m_acc.mean()),
            "best_baseline_loss": best.name, "baseline_loss": num(base), "loss_gain": num(gain),
            "loss_gain_se": num(se), "best_baseline_accuracy": best_a.name,
            "baseline_accuracy": num(best_a.correct[bad].mean()), "accuracy_gain": num(gain_a),
            "accuracy_gain_se": num(se_a)}
        if int(good.sum()):  # context only: how the model does where training did put the loss
            ev["trained_slot_examples"] = {"examples": int(good.sum()),
                                           "model_accuracy": num(scores.correct[good].mean())}
        summary = (f"has loss {num(m_loss.mean(), 3)} vs {num(base, 3)} nats and accuracy "
                   f"{num(m_acc.mean(), 3)} vs {num(best_a.correct[bad].mean(), 3)} for count "
                   f"baselines fitted on the train data ({best.name}, {best_a.name})")
        return not beats, summary

    @staticmethod
    def _train_sample(run, n: int) -> np.ndarray:
        cap = run.budget.max_train_examples
        if cap is None or n <= cap:
            return np.arange(n)
        return np.sort(np.random.default_rng(run.options.seed).choice(n, size=cap, replace=False))

    @staticmethod
    def _token_coverage(train: Examples, tr_idx, eval_: Examples, ev_idx) -> tuple[float, float]:
        """Shares of the eval's target tokens that occur among the training inputs, and that
        never occur as a training target."""
        inputs, targets = set(), set()
        for i in tr_idx:
            inputs.update(train.input_ids[int(i)])
            lab = np.asarray(train.token_labels(int(i)))[1:]
            targets.update(lab[lab != IGNORE_INDEX].tolist())
        seen = unseen = total = 0
        for i in ev_idx:
            lab = np.asarray(eval_.token_labels(int(i)))[1:]
            lab = lab[lab != IGNORE_INDEX].tolist()
            seen += sum(t in inputs for t in lab)
            unseen += sum(t not in targets for t in lab)
            total += len(lab)
        return seen / max(total, 1), unseen / max(total, 1)

    @staticmethod
    def _slots_text(mask: np.ndarray, S: int) -> str:
        parts = [f"{k / S:.1f}-{(k + 1) / S:.1f}" for k in np.nonzero(mask)[0]]
        return ", ".join(parts) if parts else "none"
