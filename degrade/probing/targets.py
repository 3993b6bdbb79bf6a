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

import numpy as np
import torch
import torch.nn.functional as F

from degrade.probing.batches import batches, sample_indices
from degrade.run.data import IGNORE_INDEX, Examples
from degrade.run.load import CAUSAL_LM, ModelHandle

MAX_CANDIDATES = 256  # classes whose probability is kept per target (LM: most frequent targets)


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


def candidate_classes(examples: Examples, indices: np.ndarray, n_classes: int, task: str) -> np.ndarray:
    if task != CAUSAL_LM:
        return np.arange(n_classes)
    counts: dict[int, int] = {}
    for i in indices:
        for t in examples.token_labels(int(i))[1:]:
            if t != IGNORE_INDEX:
                counts[t] = counts.get(t, 0) + 1
    top = sorted(counts, key=lambda t: -counts[t])[:MAX_CANDIDATES]
    return np.asarray(sorted(t for t in top if 0 <= t < n_classes), dtype=np.int64)


@torch.no_grad()
def target_predictions(model: ModelHandle, examples: Examples, max_examples: int | None = None,
                       seed: int = 0, batch_size: int = 64) -> Targets:
    indices = sample_indices(len(examples), max_examples, seed)
    cols: dict[str, list] = {k: [] for k in ("example", "position", "given", "pred", "p_given",
                                             "p_pred", "rank", "probs")}
    rows_pred: dict[int, np.ndarray] = {}
    rows_label: dict[int, np.ndarray] = {}
    rows_input: dict[int, np.ndarray] = {}
    classes = None
    n_classes = 0
    module = model.module
    was_training = module.training
    module.eval()
    try:
        for idx, ids, mask, labels in batches(examples, indices, batch_size):
            logits = model.logits(ids, mask).cpu()
            n_classes = int(logits.shape[-1])
            if classes is None:
                classes = candidate_classes(examples, indices, n_classes, model.task)
            if model.task == CAUSAL_LM:
                lp = F.log_softmax(logits[:, :-1], dim=-1)
                target = labels[:, 1:]
                pred = lp.argmax(-1)
                for r, e in enumerate(idx):
                    n_tok = len(examples.input_ids[int(e)])
                    rows_pred[int(e)] = pred[r, :max(n_tok - 1, 0)].numpy()
                    rows_label[int(e)] = labels[r, :n_tok].numpy()
                    rows_input[int(e)] = ids[r, :n_tok].numpy()
                valid = (target != IGNORE_INDEX) & (target < n_classes)
                b, t = torch.nonzero(valid, as_tuple=True)
                rows_lp = lp[b, t]  # [m, V]
                given = target[b, t]
                example = torch.as_tensor(idx)[b]
                position = t + 1
            else:
                rows_lp = F.log_softmax(logits, dim=-1)
                given = torch.tensor([examples.label[int(i)] for i in idx])
                keep = (given >= 0) & (given < n_classes)
                rows_lp, given = rows_lp[keep], given[keep]
                example = torch.as_tensor(idx)[keep]
                position = torch.zeros_like(given)
            lp_given = rows_lp.gather(1, given[:, None])[:, 0]
            top_lp, top = rows_lp.max(-1)
            cols["example"].append(example.numpy())
            cols["position"].append(position.numpy())
            cols["given"].append(given.numpy())
            cols["pred"].append(top.numpy())
            cols["p_given"].append(lp_given.exp().numpy())
            cols["p_pred"].append(top_lp.exp().numpy())
            cols["rank"].append((1 + (rows_lp > lp_given[:, None]).sum(-1)).numpy())
            cols["probs"].append(rows_lp[:, torch.as_tensor(classes)].exp().numpy())
    finally:
        module.train(was_training)
    cat = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
    k = 0 if classes is None else len(classes)
    probs = cat["probs"].reshape(-1, k) if cat["probs"].size else np.zeros((0, k))
    is_lm = model.task == CAUSAL_LM
    return Targets(cat["example"].astype(int), cat["position"].astype(int), cat["given"].astype(int),
                   cat["pred"].astype(int), cat["p_given"], cat["p_pred"], cat["rank"].astype(int),
                   classes if classes is not None else np.zeros(0, int), probs, n_classes,
                   model.task, indices, rows_pred if is_lm else None, rows_label if is_lm else None,
                   rows_input if is_lm else None)


def eval_targets(run) -> Targets:
    """The chosen model's targets on the eval data, computed once per run (a --budget sample)."""
    return run.cache("eval_targets", lambda: target_predictions(
        run.model(), run.eval_data, run.budget.max_eval_examples, seed=run.options.seed))


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
