"""Perception DegradeBench cases: a wrong hypothesis about the data process, not a bug.

Each run is trained correctly and implemented correctly; what is wrong is the architectural or
objective hypothesis: positions as absolute indices evaluated where they were never trained, a
window shorter than the task's dependencies, an order-blind architecture on an order task, and a
loss that never asks for what the eval measures. A careful engineer settles O, R and I first
(the eval is sound, training converged, the code does what it says) and is left with the
hypothesis, so the expected verdict is `perception`.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from degrade.bench.case import Built, Case
from degrade.bench.families import copy_data, hf_run, modadd_data, order_data, plain_run
from degrade.bench.tasks import IGNORE, copy_rows

HYPOTHESIS = "degrade.bench.hypothesis_models"


def _beyond_length(folder: Path) -> Built:
    """Learned absolute positions (GPT-2 wpe) trained on copies of k <= 6 (13 tokens), evaluated
    on k up to 14 (29 tokens): position rows 13.. never got a gradient."""
    from degrade.bench.train import tiny_gpt2
    train, evals = copy_data(6000, 512, vocab=16, train_k=(3, 6), eval_k=(3, 14), seed=11)
    model = tiny_gpt2(17, n_layer=2, n_embd=64, n_positions=64, seed=11)
    return hf_run(folder, model, train, evals, max_steps=200, lr=3e-3, batch_size=128,
                  warmup_steps=20, eval_steps=20, logging_steps=5, seed=11, weight_decay=0.01,
                  lr_scheduler_type="linear")


def _short_window(folder: Path) -> Built:
    """TinyGPT whose attention sees only the last 3 tokens per layer (2 layers: 5 tokens), on
    copies of k = 2..10: copying x_i needs attention k+1 tokens back. Trained and evaluated on the
    same lengths, so the failure is about dependency distance, not unseen lengths."""
    train, evals = copy_data(6000, 512, vocab=16, train_k=(2, 10), seed=12)
    cfg = {"vocab": 17, "d_model": 64, "n_layer": 2, "n_head": 4, "max_len": 32, "window": 3}
    return plain_run(folder, cfg, train, evals, seed=12, max_steps=300, lr=3e-3, batch_size=128,
                     warmup_steps=30, eval_steps=30, logging_steps=5, weight_decay=0.01)


def _order_classifier(folder: Path, factory: str, seed: int) -> Built:
    """An order-classification run (is marker 1 before marker 2?) of a plain nn.Module from
    hypothesis_models, trained by the HF Trainer and given to degrade through --model-factory."""
    import torch

    from degrade.bench import hypothesis_models
    train, evals = order_data(4000, 512, vocab=12, length=10, seed=seed)
    torch.manual_seed(seed)
    model = getattr(hypothesis_models, factory)()
    built = hf_run(folder, model, train, evals, max_steps=250, lr=2e-3, batch_size=128,
                   warmup_steps=25, eval_steps=25, logging_steps=5, seed=seed, weight_decay=0.01,
                   lr_scheduler_type="linear")
    return Built(built.run_dir, built.train_data, built.eval_data, f"{HYPOTHESIS}:{factory}")


def _prompt_only_loss(folder: Path) -> Built:
    """A copy-task LM whose training labels cover only the prompt x (the copy after SEP is masked
    out, -100), evaluated on the copy: the loss never asked for copying. Fresh random sequences
    (20k, ~1.3 epochs) so that the prompt tokens, unpredictable by design, are not memorised."""
    from degrade.bench.train import tiny_gpt2
    _, evals = copy_data(6000, 512, vocab=16, train_k=(4, 8), seed=13)
    train = []
    for r in copy_rows(8000, vocab=16, min_k=4, max_k=8, seed=13):
        k = (len(r["input_ids"]) - 1) // 2
        train.append({"input_ids": r["input_ids"], "labels": r["input_ids"][:k] + [IGNORE] * (k + 1)})
    seen = {tuple(r["input_ids"]) for r in train}
    evals = [r for r in evals if tuple(r["input_ids"]) not in seen]
    model = tiny_gpt2(17, n_layer=2, n_embd=64, n_positions=64, seed=13)
    return hf_run(folder, model, train, evals, max_steps=150, lr=3e-3, batch_size=128,
                  warmup_steps=15, eval_steps=15, logging_steps=5, seed=13, weight_decay=0.01,
                  lr_scheduler_type="linear")


def _packed_offset(folder: Path) -> Built:
    """Modular addition (p=23, learned absolute positions) trained one problem per sequence at
    offset 0, evaluated few-shot style: each held-out problem alone, and again after 1-3 other
    held-out problems (only its answer scored), so that it sits at offsets 4-12 which training never
    used. The hypothesis "position = absolute index" breaks the task's translation invariance."""
    import numpy as np

    from degrade.bench.train import tiny_gpt2
    p = 23
    train, held = modadd_data(p, 0.8, seed=14)
    rng = np.random.default_rng(14)
    evals = []
    for j, r in enumerate(held):
        evals.append(r)
        shots = [held[int(i)] for i in rng.choice(len(held), size=int(rng.integers(1, 4)), replace=False)
                 if int(i) != j]
        prefix = [t for s in shots for t in s["input_ids"]]
        evals.append({"input_ids": prefix + r["input_ids"], "labels": [IGNORE] * len(prefix) + r["labels"]})
    model = tiny_gpt2(p + 1, n_layer=1, n_embd=64, n_positions=32, seed=14)
    return hf_run(folder, model, train, evals, max_steps=600, lr=1e-3, batch_size=128,
                  warmup_steps=20, eval_steps=60, logging_steps=10, seed=14, weight_decay=1.0,
                  lr_scheduler_type="constant_with_warmup")


def _proxy_label(folder: Path) -> Built:
    """A tiny BERT trained on a labelling heuristic (label 1 when marker 1 sits in the first half
    of the sequence) and evaluated on what that heuristic stands for (marker 1 before marker 2).
    The two agree on ~78% of sequences: the proxy caps the eval accuracy there however well the
    model learns it."""
    from degrade.bench.train import tiny_bert_classifier
    train, evals = order_data(4000, 512, vocab=12, length=10, seed=17)
    for r in train:
        body = r["input_ids"][1:]
        r["label"] = int(body.index(1) < len(body) / 2)
    model = tiny_bert_classifier(12, hidden=64, max_len=32, seed=17)
    return hf_run(folder, model, train, evals, max_steps=250, lr=2e-3, batch_size=128,
                  warmup_steps=25, eval_steps=25, logging_steps=5, seed=17, weight_decay=0.01,
                  lr_scheduler_type="linear")


def _case(name, family, codes, build, why, writer="hf-trainer", quick=False) -> Case:
    return Case(name, family, "perception", codes, why, build, writer, quick)


CASES: list[Case] = [
    _case("perc-learned-positions-beyond-length", "copy", ("P402",), _beyond_length,
          "GPT-2's learned absolute positions past the longest training sequence never got a "
          "gradient: copies longer than any trained collapse while training converged; the "
          "hypothesis 'position = absolute index' does not extrapolate."),
    _case("perc-attention-window-too-short", "copy", ("P402",), _short_window,
          "a sliding attention window (3 tokens, 2 layers) cannot reach the k+1-token dependency of "
          "copying: accuracy collapses past the receptive field at lengths training covered.",
          writer="recorder"),
    _case("perc-order-blind-encoder", "order", ("P403",),
          partial(_order_classifier, factory="order_blind_encoder", seed=15),
          "an encoder without any position mechanism is permutation-invariant, so 'is 1 before 2' "
          "is beyond it however well trained: the hypothesis 'order does not matter' is wrong."),
    _case("perc-bag-of-embeddings-order", "order", ("P403",),
          partial(_order_classifier, factory="bag_of_embeddings", seed=16),
          "a deep-averaging network (mean of token embeddings) assumes a sequence is the bag of its "
          "tokens; the order task's label lives in the order, which averaging erases.", quick=True),
    _case("perc-prompt-only-loss", "copy", ("P404",), _prompt_only_loss,
          "the training labels cover only the prompt; the copy the eval scores never carried loss, "
          "although its tokens were in every training input: the objective does not ask for the "
          "ability the eval measures.", quick=True),
    _case("perc-packed-offset-modadd", "modadd", ("P402",), _packed_offset,
          "modular addition trained at offset 0 with learned absolute positions fails on problems "
          "placed after 1-3 others (offsets never trained) while the same problems alone stay "
          "right: the task is translation-invariant, the positional hypothesis is not."),
    _case("perc-proxy-label-order", "order", ("P404",), _proxy_label,
          "a BERT classifier trained on a proxy label (marker 1 in the first half) learns it well, "
          "but the eval asks whether marker 1 precedes marker 2: the training objective is not the "
          "evaluated ability, and more training of the same kind cannot close the gap."),
]
