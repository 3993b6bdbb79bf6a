"""Instantiation cases: the architecture is right for the task, the code that realises it is not.

Every fault lives in the model's code (degrade/bench/faulty_models.py), which degrade is given
through --model-factory exactly as a user would give their own modeling code; the training setup
(data, optimiser, schedule, steps) is a healthy one, so the code fault is the cleanest explanation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from degrade.bench import faulty_models as FM
from degrade.bench.case import Built, Case
from degrade.bench.families import copy_data, plain_run
from degrade.bench.tasks import copy_rows, modular_addition_rows, order_rows
from degrade.bench.train import train_hf, write_jsonl
from degrade.bench.train_plain import train_plain

FACTORIES = "degrade.bench.faulty_models"


def _data(folder: Path, train: list[dict], evals: list[dict]) -> tuple[Path, Path]:
    return write_jsonl(train, folder / "train.jsonl"), write_jsonl(evals, folder / "eval.jsonl")


def _hf_factory_case(folder: Path, name: str, train: list[dict], evals: list[dict], **kw) -> Built:
    tr, ev = _data(folder, train, evals)
    train_hf(folder / "run", FM.preset(name), train, evals, **kw)
    return Built(folder / "run", tr, ev, f"{FACTORIES}:{name}")


def _copy(n_train: int = 2000, n_eval: int = 200) -> tuple[list[dict], list[dict]]:
    return copy_rows(n_train, vocab=FM.COPY_VOCAB, seed=1), copy_rows(n_eval, vocab=FM.COPY_VOCAB, seed=2)


def build_mask_leak(folder: Path) -> Built:
    # Modular addition `a b = c`: without the causal mask, the position of `=` sees c itself.
    train, evals = modular_addition_rows(FM.MODADD_P, train_fraction=0.5, seed=0)
    return _hf_factory_case(folder, "modadd_leak", train, evals, max_steps=300, lr=1e-3,
                            batch_size=64, eval_steps=50)


def build_softmax_over_queries(folder: Path) -> Built:
    # softmax(dim=-2): each key's weights are normalised over the queries (plain loop + Recorder).
    # One sequence length (k = 6), so no batch carries padding: over queries, padded rows would
    # also make every eval number depend on the batch (I304), and the observation layer would
    # rightly say the logged eval does not come back. Here the code fault is the only one.
    train = copy_rows(2000, vocab=FM.COPY_VOCAB, min_k=6, max_k=6, seed=1)
    evals = copy_rows(200, vocab=FM.COPY_VOCAB, min_k=6, max_k=6, seed=2)
    tr, ev = _data(folder, train, evals)
    name = "copy_softmax_over_queries"
    train_plain(folder / "run", FM.preset(name), train, evals, params={"model": FM.PRESETS[name][0]},
                factory=f"{FACTORIES}:{name}", max_steps=400, lr=3e-3, eval_steps=50,
                train_data=tr, eval_data=ev)
    return Built(folder / "run", tr, ev, f"{FACTORIES}:{name}")


def _order_variable_length(n: int, seed: int) -> list[dict]:
    # Real classification data rarely has one length: 6..14 tokens, so batches carry padding.
    rng = np.random.default_rng(seed)
    rows = []
    for length in range(6, 15):
        rows += order_rows(n // 9, vocab=12, length=length, seed=seed * 100 + length)
    # Token ids shifted by one so that 0 is a pad token only (as in real vocabularies; the
    # order task's own 0 is [CLS]).
    return [{"input_ids": [t + 1 for t in rows[i]["input_ids"]], "label": rows[i]["label"]}
            for i in rng.permutation(len(rows))]


def build_padding_ignored(folder: Path) -> Built:
    train, evals = _order_variable_length(2700, 1), _order_variable_length(450, 2)
    tr, ev = _data(folder, train, evals)
    train_hf(folder / "run", FM.new_bert_ignoring_padding(13), train, evals, max_steps=300,
             lr=1e-3, batch_size=64, eval_steps=50)
    return Built(folder / "run", tr, ev, f"{FACTORIES}:bert_ignoring_padding")


def build_dead_heads(folder: Path) -> Built:
    train, evals = _copy()
    return _hf_factory_case(folder, "copy_dead_heads", train, evals, max_steps=400, lr=3e-3,
                            batch_size=64, eval_steps=50)


def build_too_small(folder: Path) -> Built:
    # d_model 4, two layers of one head (~900 parameters) for 2,000 copy sequences (~12,000
    # targets). Two layers, not one: a one-layer model would also be a depth hypothesis (P406).
    train, evals = _copy()
    return _hf_factory_case(folder, "copy_too_small", train, evals, max_steps=600, lr=3e-2,
                            batch_size=64, eval_steps=100)


def build_mask_leak_copy(folder: Path) -> Built:
    """The same leak as i3-mask-leak-modadd, on the copy task, in a plain loop with the Recorder."""
    train, evals = copy_data(6000, 512, vocab=16, train_k=(4, 8), seed=21)
    cfg = {"vocab": 17, "d_model": 64, "n_layer": 2, "n_head": 4, "max_len": 32, "causal": False}
    return plain_run(folder, cfg, train, evals, seed=21, max_steps=150, lr=3e-3, batch_size=128,
                     warmup_steps=15, eval_steps=30, logging_steps=5, weight_decay=0.01)


def build_norm_bug(folder: Path) -> Built:
    train, evals = _copy()
    return _hf_factory_case(folder, "copy_norm_no_sqrt", train, evals, max_steps=400, lr=3e-3,
                            batch_size=64, eval_steps=50)


CASES = [
    Case("i3-mask-leak-modadd", "modadd", "instantiation", ("I301",),
         "The attention has no causal mask, so the model reads the answer it must predict: the "
         "code does not realise a causal decoder.", build_mask_leak, quick=True),
    Case("i3-softmax-over-queries-copy", "copy", "instantiation", ("I306", "I301"),
         "The attention softmax normalises over queries instead of keys, so attention rows are no "
         "distribution and later tokens leak into earlier positions: a code bug.",
         build_softmax_over_queries, writer="recorder"),
    Case("i3-padding-ignored-order", "order", "instantiation", ("I304",),
         "The classifier's forward drops the attention mask, so padding tokens change the "
         "prediction of the real tokens: a code bug, not data or training.", build_padding_ignored,
         quick=True),
    Case("i3-dead-heads-copy", "copy", "instantiation", ("I302",),
         "Two of every layer's four heads are zeroed by code: capacity the architecture promises "
         "and the code does not deliver.", build_dead_heads),
    Case("i3-too-small-copy", "copy", "instantiation", ("I305",),
         "A two-layer model of d_model 4 (~900 parameters) cannot fit 12,000 deterministic copy targets: "
         "training flattened far above the data's floor, so the sizes in the code are too small.",
         build_too_small),
    Case("i3-mask-leak-copy-recorder", "copy", "instantiation", ("I301",),
         "A TinyGPT built without its causal mask (plain loop, Recorder): each position sees the "
         "token it predicts, so the code does not realise a causal decoder.", build_mask_leak_copy,
         writer="recorder"),
    Case("i3-norm-no-sqrt-copy", "copy", "instantiation", ("I307",),
         "A hand-written LayerNorm divides by the variance instead of the standard deviation, so "
         "its output is not normalised: a code bug in the normalisation.", build_norm_bug),
]
