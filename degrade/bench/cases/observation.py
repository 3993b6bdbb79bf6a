"""Observation DegradeBench cases: a model that trained fine, evaluated wrongly.

Each fault is injected where it happens in practice: in how the eval set was built (rows copied
from training, too few rows, noisy labels, targets training never had, truncation, labels shifted
once too often) or in the evaluation code (a callback that turns dropout back on). Nothing is left
in the run dir: degrade sees the data only through --train-data / --eval-data.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from degrade.bench.case import Built, Case
from degrade.bench.families import copy_data, hf_run, modadd_data, order_data
from degrade.bench.tasks import IGNORE, copy_rows


# ---- O103: half of the eval set are training rows -----------------------------------------------
def _overlap_modadd(folder: Path) -> Built:
    from degrade.bench.train import tiny_gpt2
    train, held = modadd_data(23, 0.5, seed=3)
    rng = np.random.default_rng(3)
    copied = [train[i] for i in rng.choice(len(train), size=len(held) // 2, replace=False)]
    evals = held[: len(held) - len(copied)] + copied  # an eval file assembled from both splits
    model = tiny_gpt2(24, n_layer=1, n_embd=64, n_positions=8, seed=3)
    return hf_run(folder, model, train, evals, max_steps=300, lr=3e-3, batch_size=64, warmup_steps=10,
                  eval_steps=30, logging_steps=5, seed=3, weight_decay=0.0, lr_scheduler_type="linear")


def _overlap_copy(folder: Path) -> Built:
    """A third of the copy eval file was taken from the training file (an eval split cut after
    shuffling a file that already held duplicates of the training rows)."""
    from degrade.bench.train import tiny_gpt2
    train, held = copy_data(6000, 512, vocab=16, train_k=(4, 8), seed=23)
    rng = np.random.default_rng(23)
    copied = [train[i] for i in rng.choice(len(train), size=len(held) // 3, replace=False)]
    evals = held[: len(held) - len(copied)] + copied
    model = tiny_gpt2(17, n_layer=2, n_embd=64, seed=23)
    return hf_run(folder, model, train, evals, max_steps=240, lr=3e-3, batch_size=128, warmup_steps=24,
                  eval_steps=24, logging_steps=5, seed=23, weight_decay=0.01, lr_scheduler_type="linear")


# ---- O102: an eval set of 24 items --------------------------------------------------------------
def _tiny_eval_order(folder: Path) -> Built:
    from degrade.bench.train import tiny_bert_classifier
    train, evals = order_data(4000, 24, vocab=12, length=10, seed=7)
    model = tiny_bert_classifier(12, max_len=32, seed=7)
    return hf_run(folder, model, train, evals, max_steps=200, lr=2e-3, batch_size=128, warmup_steps=20,
                  eval_steps=20, logging_steps=5, seed=7, weight_decay=0.01, lr_scheduler_type="linear")


# ---- O101: an "MC-dropout" Trainer subclass evaluates in train mode -------------------------------
def _dropout_eval_copy(folder: Path) -> Built:
    from degrade.bench.train import tiny_gpt2

    import torch
    import transformers

    class MCDropoutTrainer(transformers.Trainer):
        """The user's Trainer subclass, meant to sample predictive uncertainty at test time
        ("MC dropout"): it switches dropout on for every evaluation batch."""

        def prediction_step(self, model, *args, **kwargs):
            model.train()
            return super().prediction_step(model, *args, **kwargs)

    train, evals = copy_data(6000, 512, vocab=16, train_k=(4, 8), seed=11)
    config = tiny_gpt2(17, n_layer=2, n_embd=64, seed=11).config
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.3
    torch.manual_seed(11)
    model = transformers.GPT2LMHeadModel(config)
    return hf_run(folder, model, train, evals, max_steps=200, lr=3e-3, batch_size=256,
                  warmup_steps=20, eval_steps=40, logging_steps=5, seed=11, weight_decay=0.01,
                  lr_scheduler_type="linear", trainer_class=MCDropoutTrainer)


# ---- O104: 15% of the eval labels flipped by a noisy annotation pass ------------------------------
def _label_noise_order(folder: Path) -> Built:
    from degrade.bench.train import tiny_bert_classifier
    train, evals = order_data(4000, 512, vocab=12, length=10, seed=13)
    rng = np.random.default_rng(13)
    for i in rng.choice(len(evals), size=int(0.15 * len(evals)), replace=False):
        evals[i] = {**evals[i], "label": 1 - evals[i]["label"]}
    model = tiny_bert_classifier(12, max_len=32, seed=13)
    return hf_run(folder, model, train, evals, max_steps=250, lr=2e-3, batch_size=128, warmup_steps=25,
                  eval_steps=25, logging_steps=5, seed=13, weight_decay=0.01, lr_scheduler_type="linear")


# ---- O105: the eval set copies symbols training never used -------------------------------------
def _unseen_targets_copy(folder: Path) -> Built:
    """Training copies symbols 0-11 only (a filtered training file); the eval file was generated
    over all 16 symbols, so a quarter of its targets are tokens the model was never asked for."""
    from degrade.bench.train import tiny_gpt2
    pool = copy_rows(9000, vocab=16, min_k=4, max_k=8, seed=17)
    train = [r for r in pool if max(r["input_ids"][: (len(r["input_ids"]) - 1) // 2]) < 12][:6000]
    seen = {tuple(r["input_ids"]) for r in train}
    evals = [r for r in copy_rows(800, vocab=16, min_k=4, max_k=8, seed=1017)
             if tuple(r["input_ids"]) not in seen][:512]
    model = tiny_gpt2(17, n_layer=2, n_embd=64, seed=17)
    return hf_run(folder, model, train, evals, max_steps=200, lr=3e-3, batch_size=256, warmup_steps=20,
                  eval_steps=20, logging_steps=5, seed=17, weight_decay=0.01, lr_scheduler_type="linear")


# ---- O106: eval inputs tokenised with max_length=16: markers past 16 are cut off ----------------
def _order_rows_var(n: int, lengths: tuple[int, int], vocab: int, seed: int, tail: int = 6) -> list[dict]:
    """Order classification over lengths in `lengths`, both markers within the last `tail`
    positions (the deciding tokens come late, as an answer at the end of a document does)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        body = rng.integers(3, vocab, size=length - 1)
        i, j = length - 1 - tail + rng.choice(tail, size=2, replace=False)
        body[i], body[j] = 1, 2
        rows.append({"input_ids": [0] + body.tolist(), "label": int(i < j)})
    return rows


def _truncated_order(folder: Path) -> Built:
    from degrade.bench.train import tiny_bert_classifier
    train = _order_rows_var(4000, (10, 28), 12, seed=19)
    evals = [{**r, "input_ids": r["input_ids"][:16]}  # the eval preprocessing's max_length=16
             for r in _order_rows_var(512, (10, 28), 12, seed=1019)]
    model = tiny_bert_classifier(12, max_len=32, seed=19)
    return hf_run(folder, model, train, evals, max_steps=300, lr=2e-3, batch_size=128, warmup_steps=30,
                  eval_steps=30, logging_steps=5, seed=19, weight_decay=0.01, lr_scheduler_type="linear")


# ---- O107: eval labels shifted left once before the model shifts them again --------------------
def _shifted_labels_copy(folder: Path) -> Built:
    """The eval file was written by a script that pre-shifts labels (labels[t] = input[t+1]) for a
    model that shifts them itself: every prediction is compared with the token after its target."""
    from degrade.bench.train import tiny_gpt2
    train, evals = copy_data(6000, 512, vocab=16, train_k=(4, 8), seed=23)
    shifted = [{**r, "labels": r["labels"][1:] + [IGNORE]} for r in evals]
    model = tiny_gpt2(17, n_layer=2, n_embd=64, seed=23)
    built = hf_run(folder, model, train, shifted, max_steps=200, lr=3e-3, batch_size=256, warmup_steps=20,
                   eval_steps=20, logging_steps=5, seed=23, weight_decay=0.01, lr_scheduler_type="linear")
    return built


def _case(name, family, codes, build, why, quick=False) -> Case:
    return Case(name, family, "observation", codes, why, build, "hf-trainer", quick)


CASES: list[Case] = [
    _case("obs-overlap-modadd", "modadd", ("O103",), _overlap_modadd,
          "half of the eval file are training pairs the model memorised (wd=0, 50% split): the "
          "eval accuracy measures memorisation.", quick=True),
    _case("obs-overlap-copy", "copy", ("O103",), _overlap_copy,
          "a third of the eval file are training rows: even for a model that generalises, those "
          "items measure recall of seen data, not the held-out accuracy the number claims."),
    _case("obs-tiny-eval-order", "order", ("O102",), _tiny_eval_order,
          "the eval set has 24 items: its accuracy has a 95% CI of about +-15 points and cannot rank "
          "checkpoints."),
    _case("obs-dropout-eval-copy", "copy", ("O101",), _dropout_eval_copy,
          "an MC-dropout callback turns dropout (p=0.3) on during evaluation: the logged eval loss "
          "is a train-mode loss that re-evaluation in eval mode does not reproduce."),
    _case("obs-label-noise-order", "order", ("O104",), _label_noise_order,
          "15% of eval labels are flipped; the model is right on those items and scored wrong.",
          quick=True),
    _case("obs-unseen-targets-copy", "copy", ("O105",), _unseen_targets_copy,
          "training copies symbols 0-11, the eval set all 16: a quarter of eval targets are tokens "
          "training never asked for."),
    _case("obs-truncated-order", "order", ("O106",), _truncated_order,
          "eval inputs were cut at 16 tokens while examples run to 28 and the deciding markers sit "
          "in the last 6 positions: past 16 they are gone and the label cannot be read."),
    _case("obs-shifted-labels-copy", "copy", ("O107",), partial(_shifted_labels_copy),
          "eval labels were shifted once before the model's own shift: the model predicts each "
          "target right but is compared with the next token."),
]
