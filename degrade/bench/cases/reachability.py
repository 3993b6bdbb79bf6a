"""Reachability DegradeBench cases: the model and the code are fine, training did not reach them.

Each fault is injected where it happens in real work — the training configuration (steps, learning
rate, weight decay, which parameters the optimiser sees) or the training data (label noise, too
few examples) — never as a hint in the run dir. The same models as the healthy cases
(degrade/bench/cases/healthy.py) are used, so that the only difference is the fault.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from degrade.bench.case import Built, Case
from degrade.bench.families import copy_data, hf_run, modadd_data, order_data, plain_run


def _copy_gpt2_stopped_early(folder: Path) -> Built:
    """A constant-LR run whose max_steps was set ~10x too low: the loss is still falling fast."""
    from degrade.bench.train import tiny_gpt2
    train, evals = copy_data(6000, 512, vocab=16, train_k=(4, 8), seed=11)
    model = tiny_gpt2(17, n_layer=2, n_embd=64, seed=11)
    return hf_run(folder, model, train, evals, max_steps=40, lr=1e-3, batch_size=64,
                  warmup_steps=4, eval_steps=4, logging_steps=2, seed=11, weight_decay=0.01,
                  lr_scheduler_type="constant_with_warmup")


def _modadd_lr_too_high(folder: Path) -> Built:
    """AdamW at lr=0.05 (50x the grokking recipe's 1e-3) on the healthy modadd model."""
    from degrade.bench.train import tiny_gpt2
    train, evals = modadd_data(23, 0.8, seed=12)
    model = tiny_gpt2(24, n_layer=1, n_embd=64, n_positions=8, seed=12)
    return hf_run(folder, model, train, evals, max_steps=300, lr=5e-2, batch_size=128,
                  warmup_steps=20, eval_steps=30, logging_steps=10, save_steps=60, seed=12,
                  weight_decay=1.0, lr_scheduler_type="constant_with_warmup")


def _copy_tinygpt_lr_too_low(folder: Path) -> Built:
    """The healthy recorded TinyGPT copy run with lr=3e-6 (1000x too low), recorded by the
    Recorder, whose layers.jsonl carries the per-step update/weight ratios."""
    train, evals = copy_data(6000, 512, vocab=16, train_k=(4, 8), seed=13)
    cfg = {"vocab": 17, "d_model": 64, "n_layer": 2, "n_head": 4, "max_len": 32}
    return plain_run(folder, cfg, train, evals, seed=13, max_steps=300, lr=3e-6, batch_size=128,
                     warmup_steps=30, eval_steps=30, logging_steps=5, weight_decay=0.01)


def _order_bert_label_noise(folder: Path) -> Built:
    """35% of the training labels flipped (a bad annotation pass); eval labels are clean."""
    from degrade.bench.train import tiny_bert_classifier
    train, evals = order_data(4000, 512, vocab=12, length=10, seed=14)
    rng = np.random.default_rng(14)
    flip = rng.random(len(train)) < 0.35
    train = [{**r, "label": 1 - r["label"]} if f else r for r, f in zip(train, flip)]
    model = tiny_bert_classifier(12, hidden=64, max_len=32, seed=14)
    return hf_run(folder, model, train, evals, max_steps=250, lr=2e-3, batch_size=128,
                  warmup_steps=25, eval_steps=25, logging_steps=5, seed=14, weight_decay=0.01,
                  lr_scheduler_type="linear")


def _order_bert_stopped_early(folder: Path) -> Built:
    """The healthy BERT order run with max_steps 25 instead of 250, at a constant LR."""
    from degrade.bench.train import tiny_bert_classifier
    train, evals = order_data(4000, 512, vocab=12, length=10, seed=24)
    model = tiny_bert_classifier(12, hidden=64, max_len=32, seed=24)
    return hf_run(folder, model, train, evals, max_steps=25, lr=1e-3, batch_size=128,
                  warmup_steps=3, eval_steps=3, logging_steps=1, seed=24, weight_decay=0.01,
                  lr_scheduler_type="constant_with_warmup")


def _copy_gpt2_tiny_data(folder: Path) -> Built:
    """60 training examples instead of thousands: the model memorises them and fails held-out."""
    from degrade.bench.train import tiny_gpt2
    train, evals = copy_data(60, 512, vocab=16, train_k=(4, 8), seed=15)
    model = tiny_gpt2(17, n_layer=2, n_embd=64, seed=15)
    return hf_run(folder, model, train, evals, max_steps=200, lr=3e-3, batch_size=32,
                  warmup_steps=20, eval_steps=20, logging_steps=5, seed=15, weight_decay=0.01,
                  lr_scheduler_type="linear")


def _order_bert_frozen(folder: Path) -> Built:
    """The encoder frozen by mistake (a fine-tuning recipe's `requires_grad = False` left in a
    from-scratch run): only embeddings and the classifier train."""
    from degrade.bench.train import tiny_bert_classifier
    train, evals = order_data(4000, 512, vocab=12, length=10, seed=16)
    model = tiny_bert_classifier(12, hidden=64, max_len=32, seed=16)
    for p in model.bert.encoder.parameters():
        p.requires_grad = False
    return hf_run(folder, model, train, evals, max_steps=250, lr=2e-3, batch_size=128,
                  warmup_steps=25, eval_steps=25, logging_steps=5, save_steps=125, seed=16,
                  weight_decay=0.01, lr_scheduler_type="linear")


def _modadd_no_weight_decay(folder: Path) -> Built:
    """The healthy modadd recipe with weight_decay=0 and 40% of the pairs: without decay the
    network memorises the training pairs instead of finding the general algorithm
    (shared/seeds/004, Nanda et al. 2023)."""
    from degrade.bench.train import tiny_gpt2
    train, evals = modadd_data(23, 0.4, seed=17)
    model = tiny_gpt2(24, n_layer=1, n_embd=64, n_positions=8, seed=17)
    return hf_run(folder, model, train, evals, max_steps=600, lr=1e-3, batch_size=128,
                  warmup_steps=20, eval_steps=60, logging_steps=10, seed=17,
                  weight_decay=0.0, lr_scheduler_type="constant_with_warmup")


def _case(name, family, codes, build, why, writer="hf-trainer", quick=False) -> Case:
    return Case(name, family, "reachability", tuple(codes), why, build, writer, quick)


CASES: list[Case] = [
    _case("reach-stopped-early-copy", "copy", ("R201",), _copy_gpt2_stopped_early,
          "40 constant-LR steps where ~300 are needed: eval loss still falling fast at the end.",
          quick=True),
    _case("reach-stopped-early-order", "order", ("R201",), _order_bert_stopped_early,
          "25 constant-LR steps where ~250 are needed: the classifier's loss still falls fast."),
    _case("reach-lr-too-high-modadd", "modadd", ("R203", "R206"), _modadd_lr_too_high,
          "AdamW lr=0.05 on modadd: updates of ~10% of the weights per step, the loss never settles."),
    _case("reach-lr-too-low-copy-recorder", "copy", ("R206", "R201"), _copy_tinygpt_lr_too_low,
          "lr=3e-6: per-step update/weight ratios ~1e-5, a straight slow decline far from converged.",
          writer="recorder"),
    _case("reach-label-noise-order", "order", ("R205",), _order_bert_label_noise,
          "35% of training labels flipped: the train loss plateaus far above zero at the noise "
          "entropy, the model confidently disagrees with a third of its training labels."),
    _case("reach-tiny-data-copy", "copy", ("R208", "R202"), _copy_gpt2_tiny_data,
          "60 training examples: the train set is memorised, held-out loss rises far above it."),
    _case("reach-frozen-encoder-order", "order", ("R204",), _order_bert_frozen,
          "the whole encoder left frozen: its weights are identical in every checkpoint and absent "
          "from the optimiser state.", quick=True),
    _case("reach-no-weight-decay-modadd", "modadd", ("R202", "R208"), _modadd_no_weight_decay,
          "modadd with weight_decay=0: the training pairs are memorised and held-out loss rises "
          "(the grokking recipe needs decay to generalise)."),
]
