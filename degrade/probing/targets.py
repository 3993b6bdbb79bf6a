"""Per-target predictions of a model: the evidence the label, latent-capability and membership
checks (O104, O107, O103) share.

A *target* is what the metric scores: one class label per example for sequence classification,
one token per scored position for a causal LM (logits at t predict the label at t+1, Hugging
Face's shift). For each target we keep the given label, the model's argmax, the probability of
both, the rank of the given label, and the probabilities of a small set of candidate classes (all
classes for classification; the target tokens that occur most often for an LM, capped so that a
50k vocabulary stays cheap). For LMs we also keep the argmax at every position, so that a check
can test other alignments of predictions and labels (an off-by-one label shift).
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

from degrade.engine.tokens import MAX_CANDIDATES, candidate_classes  # noqa: F401 - re-exported
from degrade.probing.batches import sample_indices

if TYPE_CHECKING:
    from degrade.run.data import Examples
    from degrade.run.load import ModelHandle


@dataclass
class Targets:
    example: np.ndarray  # [m] index into the Examples
    position: np.ndarray  # [m] LM: position of the target token; classification: 0
    given: np.ndarray  # [m] the label the data gives
    pred: np.ndarray  # [m] the model's argmax
    p_given: np.ndarray  # [m]
    p_pred: np.ndarray  # [m]
    rank: np.ndarray  # [m] 1 = the given label is the argmax
    classes: np.ndarray  # [K] the candidate classes whose probabilities are kept
    probs: np.ndarray  # [m, K] probabilities of the candidate classes
    n_classes: int  # the size of the output space (classes or vocabulary)
    task: str
    indices: np.ndarray  # the examples scored (a sample under --budget)
    # LM only: for example e, argmax at every position and the label row, for realignment tests
    rows_pred: dict[int, np.ndarray] | None = None
    rows_label: dict[int, np.ndarray] | None = None
    # LM only: the input ids of example e, so that offset 0 can tell a label shift from an echo
    rows_input: dict[int, np.ndarray] | None = None

    @property
    def m(self) -> int:
        return int(self.given.size)

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.given


def target_predictions(model: ModelHandle, examples: Examples, max_examples: int | None = None,
                       seed: int = 0, meter=None) -> Targets:
    """Targets of a sample of `examples` (engine/passes.py)."""
    from degrade.engine.passes import run_pass
    indices = sample_indices(len(examples), max_examples, seed)
    return run_pass(model, examples, indices, torch_seed=seed, meter=meter).targets


def eval_targets(run) -> Targets:
    """The chosen model's targets on the eval data, computed once per run (a --budget sample)."""
    return run.engine.eval_pass().targets


def vocab_problem(run, examples: Examples) -> str | None:
    """Why the model cannot score these examples (token ids outside its vocabulary), else None."""
    from degrade.inputs.model_fit import fit_problem
    vocab = (run.config or {}).get("vocab_size") or (run.run_config or {}).get("vocab")
    return fit_problem(examples, vocab=vocab) if isinstance(vocab, int) else None


def scored_eval_targets(run, minimum: int = 20) -> Targets:
    """eval_targets for a check: unusable inputs or too few scored targets raise CheckSkipped."""
    from degrade.check import CheckSkipped
    from degrade.errors import InputError
    if (why := vocab_problem(run, run.eval_data)) is not None:
        raise CheckSkipped(why + ": not scored")
    try:
        t = eval_targets(run)
    except InputError as e:
        raise CheckSkipped(f"the model could not be scored: {e}") from None
    if t.m < minimum:
        raise CheckSkipped(f"{t.m} scored eval targets; at least {minimum} are needed")
    return t
