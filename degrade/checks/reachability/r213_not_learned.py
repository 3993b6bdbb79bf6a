"""R213 not-learned: the model predicts no better than a constant; it has not been reached."""
from __future__ import annotations

from degrade.check import Check
from degrade.layers import Layer
from degrade.learned import MIN_GAIN, Z, assess, require_finite


class NotLearned(Check):
    """The model predicts its targets no better than always answering the most frequent one.

    What it detects: the precondition before blame (degrade/learned.py, DESIGN.md §1). On the
    shared eval pass, the model's share of targets right is compared per example with the best
    constant predictor's in hindsight (the most frequent label, or target token for an LM); when
    the paired gain is not beyond 2 standard errors and 1 accuracy point, the training-sample pass
    is read the same way. A model that beats the constant on neither has learned nothing:
      - error: no gain beyond noise on the eval rows nor on the training sample;
      - info otherwise, with the gain (the precondition the inner layers' checks rely on).
    While this holds, every check that reads a trained model's behaviour (instantiation and
    perception probes, O104, O107, R205) is skipped with this reason: their evidence would
    describe an untrained model.

    Why it matters: a model at chance has not been reached. Whatever its architecture or its
    evaluation, training has not produced the model they are about: the first thing to fix is
    the training itself (learning rate, steps, data, a frozen or detached graph).

    Evidence used: the model's per-example accuracy and loss on the eval sample (and the training
    sample), the targets' frequencies (the constant's accuracy and its loss, the targets' entropy).

    Fix: look at the training first: a learning rate far off (R206), a run stopped after a few
    steps (R201), frozen parameters (R204), labels that do not match the inputs (R205).

    The thresholds (z = 2 standard errors, an accuracy gain of at least 0.01) are P401's, whose
    baseline ladder this constant is the bottom rung of.
    """

    code, name, layer = "R213", "not-learned", Layer.REACHABILITY
    needs = frozenset({"model", "eval_data"})
    tasks = frozenset({"causal-lm", "sequence-classification", "seq2seq"})

    def run(self, run):
        require_finite(run.engine.eval_pass().scores, "whether it learned")
        v = assess(run)
        ev = v.evidence()
        if v.learned:
            return [self.finding("info", f"The model has learned something: {v.summary()}.",
                                 confidence=0.9, evidence=ev)]
        return [self.finding(
            "error", f"The model has not learned the task: {v.summary()}; it is no better than a "
            f"constant by {Z:g} standard errors and {MIN_GAIN:g} of accuracy, on the eval rows or the "
            f"training sample. The checks that read a trained model's behaviour were skipped.",
            confidence=0.9, evidence=ev,
            fix="Fix the training before anything else: the learning rate (R206), the number of steps "
                "(R201), frozen parameters (R204), labels that do not follow from the inputs (R205).",
            next_experiment="Overfit a batch of 8-32 training examples with the same code: a loss that "
                            "does not go to ~0 points at the code or the optimiser settings, one that "
                            "does points at the schedule or the data.")]
