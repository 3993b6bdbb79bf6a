"""Healthy DegradeBench cases: real small runs trained to a genuinely good model, no fault.

degrade must say `none` on every one: they measure the false-alarm rate. They differ in family,
seed, size and writer (HF Trainer output dirs, and a plain loop recorded by degrade's Recorder with
a plain nn.Module given through --model-factory), so that a check tuned to one of them does not
pass the others by luck. Final eval accuracies (measured on one CPU thread) are in the `why`s.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from degrade.bench.case import Built, Case
from degrade.bench.families import copy_data, hf_run, modadd_data, order_data, plain_run


def _copy_gpt2(folder: Path, *, seed: int, vocab: int, k: tuple[int, int], n_train: int,
               n_layer: int, n_embd: int, steps: int, lr: float = 3e-3, batch_size: int = 256) -> Built:
    from degrade.bench.train import tiny_gpt2
    train, evals = copy_data(n_train, 512, vocab=vocab, train_k=k, seed=seed)
    model = tiny_gpt2(vocab + 1, n_layer=n_layer, n_embd=n_embd, seed=seed)
    return hf_run(folder, model, train, evals, max_steps=steps, lr=lr, batch_size=batch_size,
                  warmup_steps=steps // 10, eval_steps=steps // 10, logging_steps=5, seed=seed,
                  weight_decay=0.01, lr_scheduler_type="linear")


def _copy_tiny_gpt(folder: Path, *, seed: int, lr: float = 3e-3, save_steps: int | None = None) -> Built:
    train, evals = copy_data(6000, 512, vocab=16, train_k=(4, 8), seed=seed)
    cfg = {"vocab": 17, "d_model": 64, "n_layer": 2, "n_head": 4, "max_len": 32}
    return plain_run(folder, cfg, train, evals, seed=seed, max_steps=300, lr=lr, batch_size=128,
                     warmup_steps=30, eval_steps=30, logging_steps=5, weight_decay=0.01,
                     save_steps=save_steps)


def _modadd(folder: Path, *, p: int, seed: int, train_fraction: float, steps: int,
            batch_size: int = 128) -> Built:
    """Decoder-only modular addition that really generalises: a large train fraction and strong
    weight decay (AdamW wd=1, the grokking recipe of shared/seeds/004: decay is what pushes the
    network from memorising to the general algorithm), and enough steps to pass the transition."""
    from degrade.bench.train import tiny_gpt2
    train, evals = modadd_data(p, train_fraction, seed=seed)
    model = tiny_gpt2(p + 1, n_layer=1, n_embd=64, n_positions=8, seed=seed)
    return hf_run(folder, model, train, evals, max_steps=steps, lr=1e-3, batch_size=batch_size,
                  warmup_steps=20, eval_steps=steps // 10, logging_steps=10, seed=seed,
                  weight_decay=1.0, lr_scheduler_type="constant_with_warmup")


def _order_bert(folder: Path, *, seed: int, vocab: int, length: int, n_train: int, steps: int,
                hidden: int = 64) -> Built:
    from degrade.bench.train import tiny_bert_classifier
    train, evals = order_data(n_train, 512, vocab=vocab, length=length, seed=seed)
    model = tiny_bert_classifier(vocab, hidden=hidden, max_len=max(32, length), seed=seed)
    return hf_run(folder, model, train, evals, max_steps=steps, lr=2e-3, batch_size=128,
                  warmup_steps=steps // 10, eval_steps=steps // 10, logging_steps=5, seed=seed,
                  weight_decay=0.01, lr_scheduler_type="linear")


def _case(name, family, build, why, writer="hf-trainer", quick=False) -> Case:
    return Case(name, family, "none", (), why, build, writer, quick)


CASES: list[Case] = [
    _case("healthy-copy-gpt2", "copy",
          partial(_copy_gpt2, seed=0, vocab=16, k=(4, 8), n_train=6000, n_layer=2, n_embd=64, steps=240,
                  batch_size=128),
          "2-layer GPT-2 learns copying (k 4-8) to ~100% held-out token accuracy; no fault.", quick=True),
    _case("healthy-copy-gpt2-long", "copy",
          partial(_copy_gpt2, seed=3, vocab=12, k=(6, 12), n_train=6000, n_layer=2, n_embd=64, steps=300,
                  batch_size=128),
          "2-layer GPT-2, longer copies (k 6-12) over 12 symbols, trained to convergence; no fault."),
    _case("healthy-copy-gpt2-small", "copy",
          partial(_copy_gpt2, seed=5, vocab=8, k=(3, 6), n_train=4000, n_layer=2, n_embd=48, steps=200),
          "a smaller GPT-2 (d=48) on short copies over 8 symbols, trained to convergence; no fault."),
    _case("healthy-copy-tinygpt-recorder", "copy", partial(_copy_tiny_gpt, seed=2),
          "plain nn.Module TinyGPT (plain loop + Recorder, --model-factory) learns copying; no fault.",
          writer="recorder", quick=True),
    _case("healthy-copy-tinygpt-high-lr", "copy", partial(_copy_tiny_gpt, seed=13, lr=3e-2, save_steps=60),
          "TinyGPT at lr 3e-2 (10x the usual) still learns copying to 99.9% held-out accuracy, though "
          "half its MLP units died on the way: waste, not a degradation (R211 may warn, never err).",
          writer="recorder"),
    _case("healthy-modadd-p23", "modadd",
          partial(_modadd, p=23, seed=0, train_fraction=0.8, steps=600),
          "modular addition p=23, 80% of pairs, wd=1: generalises to ~100% on held-out pairs; no fault.",
          quick=True),
    _case("healthy-modadd-p23-seed2", "modadd",
          partial(_modadd, p=23, seed=2, train_fraction=0.8, steps=600),
          "the p=23 recipe with another seed and split: generalises on held-out pairs; no fault."),
    _case("healthy-modadd-p31", "modadd",
          partial(_modadd, p=31, seed=1, train_fraction=0.7, steps=700),
          "modular addition p=31, 70% of pairs, wd=1: generalises on held-out pairs; no fault."),
    _case("healthy-order-bert", "order",
          partial(_order_bert, seed=0, vocab=12, length=10, n_train=4000, steps=250),
          "tiny BERT classifies which marker comes first (length 10) near-perfectly; no fault.",
          quick=True),
    _case("healthy-order-bert-wide", "order",
          partial(_order_bert, seed=5, vocab=12, length=12, n_train=3000, steps=250, hidden=96),
          "a wider tiny BERT (hidden 96) on length-12 order classification, another seed; no fault."),
    _case("healthy-order-bert-long", "order",
          partial(_order_bert, seed=4, vocab=16, length=16, n_train=4000, steps=300),
          "tiny BERT on longer sequences (length 16, 16 tokens) classifies order near-perfectly; no fault."),
]
