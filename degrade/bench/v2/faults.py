"""DegradeBench v2 faults: each draws its severity from a range, so no threshold can sit on one value.

A fault turns the healthy recipe of a (family, model, seed) into the faulty one by changing exactly
one thing (data, configuration or model code), and names how it must prove itself against its
healthy twin (degrade/bench/v2/proof.py):

- `cost`: the faulty run's correct held-out accuracy is at least COST_MARGIN below the twin's;
- `logged`: the run's logged eval number is wrong: |logged - correct| accuracy >= COST_MARGIN, or
  the logged eval loss is >= LOSS_MARGIN (relative) away from a correct evaluation;
- `immaterial`: healthy-but-unfinished: the remaining gain against the finished twin is below
  IMMATERIAL_GAIN;
- `converged`: healthy runs meet the convergence criterion of proof.py.

| fault | layer | codes | severity drawn from |
|---|---|---|---|
| healthy | none | - | - |
| unfinished | none | - | stopped at 80-92% of a decaying schedule |
| stopped-early | reachability | R201 | killed at 3-30% of the schedule |
| lr-too-high | reachability | R203, R206 | LR x 30-1000 |
| lr-too-low | reachability | R206, R201 | LR / 300-3000 |
| train-label-noise | reachability | R205 | 15-50% of training targets replaced |
| frozen-blocks | reachability | R204 | the first 1..all transformer blocks frozen |
| tiny-data | reachability | R208, R202 | 1-5% of the training rows |
| duplicated-rows | reachability | R209 | the training set is 2-10% of its rows, each repeated to the full size |
| one-layer | perception | P406 | one attention layer for copy, an induction task (llama: relative positions) |
| eval-overlap | observation | O103 | 30-80% of eval rows are training rows (train set cut to 2-8%) |
| eval-train-mode | observation | O101 | dropout 0.1-0.3 left on during evaluation |
| eval-label-noise | observation | O104 | 15-50% of eval labels wrong (classification) |
| length-shift | perception | P402 | trained on instances up to 45-65% of the eval length |
| mask-leak | instantiation | I301 | no causal mask (tinygpt) |
| softmax-queries | instantiation | I306, I301 | attention softmax over the query axis (tinygpt) |
| dead-heads | instantiation | I302 | 2 or 3 of the 4 heads of every layer zeroed (tinygpt) |
| no-residual | instantiation | I307 | the attention residual connection dropped (tinygpt) |
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from degrade.bench.v2.tasks import CLS, LM

COST_MARGIN = 0.05  # accuracy points a fault must cost (or a logged number be wrong by)
LOSS_MARGIN = 0.10  # relative error of a logged eval loss that counts as wrong
IMMATERIAL_GAIN = 0.01  # accuracy points an unfinished healthy run may still lack


@dataclass(frozen=True)
class Fault:
    name: str
    layer: str
    codes: tuple[str, ...]
    proof: str  # cost | logged | immaterial | converged
    kinds: tuple[str, ...]  # lm, cls
    models: tuple[str, ...] | None  # None: every model class of the kinds
    draw: Callable[[np.random.Generator, dict], dict[str, Any]]  # severity params given the recipe


def _log_uniform(rng, lo, hi) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


HF = ("gpt2", "llama", "bart", "bert", "distilbert", "minilm")
FAULTS = {f.name: f for f in [
    Fault("healthy", "none", (), "converged", (LM, CLS), None, lambda rng, r: {}),
    Fault("unfinished", "none", (), "immaterial", (LM, CLS), HF,
          lambda rng, r: {"stop_fraction": float(rng.uniform(0.80, 0.92))}),
    Fault("stopped-early", "reachability", ("R201",), "cost", (LM, CLS), None,
          lambda rng, r: {"stop_fraction": float(rng.uniform(0.03, 0.30))}),
    Fault("lr-too-high", "reachability", ("R203", "R206"), "cost", (LM, CLS), HF,
          lambda rng, r: {"lr": r["lr"] * _log_uniform(rng, 30, 1000)}),
    Fault("lr-too-low", "reachability", ("R206", "R201"), "cost", (LM, CLS), None,
          lambda rng, r: {"lr": r["lr"] / _log_uniform(rng, 300, 3000)}),
    Fault("train-label-noise", "reachability", ("R205",), "cost", (LM, CLS), HF,
          lambda rng, r: {"train_noise": float(rng.uniform(0.15, 0.5))}),
    Fault("frozen-blocks", "reachability", ("R204",), "cost", (LM, CLS), HF,
          lambda rng, r: {"frozen_blocks": int(rng.integers(1, r["layers"] + 1))}),
    Fault("tiny-data", "reachability", ("R208", "R202"), "cost", (LM, CLS), HF,
          lambda rng, r: {"train_fraction": float(rng.uniform(0.01, 0.05))}),
    Fault("duplicated-rows", "reachability", ("R209",), "cost", (LM, CLS), HF,
          lambda rng, r: {"train_unique": float(rng.uniform(0.02, 0.10))}),
    # llama only: with RoPE's relative positions one layer cannot reach the token after the previous
    # occurrence (copy at 63-65% vs its twin's 100%, seeds 11, 12); GPT-2's learned absolute
    # positions let one layer copy by position (97.5%, seed 11), so the fault would not cost there
    Fault("one-layer", "perception", ("P406",), "cost", (LM,), ("llama",),
          lambda rng, r: {"layers": 1}),
    Fault("eval-overlap", "observation", ("O103",), "logged", (LM, CLS), HF,
          lambda rng, r: {"eval_overlap": float(rng.uniform(0.3, 0.8)),
                          "train_fraction": float(rng.uniform(0.02, 0.08))}),
    Fault("eval-train-mode", "observation", ("O101",), "logged", (LM, CLS), ("gpt2", "bart", "bert", "distilbert", "minilm"),
          lambda rng, r: {"dropout": float(rng.uniform(0.1, 0.3)), "eval_train_mode": True}),
    Fault("eval-label-noise", "observation", ("O104",), "logged", (CLS,), HF,
          lambda rng, r: {"eval_noise": float(rng.uniform(0.15, 0.5))}),
    Fault("length-shift", "perception", ("P402",), "cost", (LM, CLS), HF,
          lambda rng, r: {"train_length_fraction": float(rng.uniform(0.45, 0.65))}),
    Fault("mask-leak", "instantiation", ("I301",), "cost", (LM,), ("tinygpt",),
          lambda rng, r: {"model_switches": {"causal": False}}),
    Fault("softmax-queries", "instantiation", ("I306", "I301"), "cost", (LM,), ("tinygpt",),
          lambda rng, r: {"model_switches": {"softmax_dim": -2}}),
    Fault("dead-heads", "instantiation", ("I302",), "cost", (LM,), ("tinygpt",),
          lambda rng, r: {"model_switches": {"dead_heads": sorted(int(h) for h in rng.choice(
              4, size=int(rng.integers(2, 4)), replace=False))}}),
    Fault("no-residual", "instantiation", ("I307",), "cost", (LM,), ("tinygpt",),
          lambda rng, r: {"model_switches": {"residual": False}}),
]}


# Practitioner bugs (issue 16; bugs.py builds them): dealt on a slot of their own per generator
# seed (generate.py), so that adding one never re-deals the faults above.
BUG_FAULTS = {f.name: f for f in [
    Fault("labels-shifted-twice", "instantiation", ("I308",), "cost", (LM,), ("gpt2", "llama"),
          lambda rng, r: {"label_shift": int(rng.integers(1, 3))}),
    Fault("loss-summed-over-accumulation", "instantiation", ("I315",), "logged-train", (LM,), ("gpt2", "llama"),
          lambda rng, r: {"accumulation": int(rng.choice([2, 4, 8])), "loss_summed": True}),
    Fault("eos-masked-as-padding", "instantiation", ("I310", "I316"), "cost", (LM,), ("gpt2", "llama"),
          lambda rng, r: {"eos_masked": True}),
    Fault("fp16-overflow", "instantiation", ("I313",), "cost", (LM,), ("gpt2", "llama"),
          lambda rng, r: {"headroom": float(rng.uniform(2.0, 8.0))}),
    Fault("doubled-bos", "instantiation", ("I311",), "cost", (LM,), ("gpt2",), lambda rng, r: {"bos": 2}),
    Fault("attention-dropout-in-eval", "instantiation", ("I309",), "cost", (LM,), ("gpt2",),
          lambda rng, r: {"bug": "attention-dropout-in-eval", "p": float(rng.uniform(0.3, 0.5))}),
    Fault("kv-cache-off-by-one", "instantiation", ("I312",), "cost", (LM,), ("gpt2",),
          lambda rng, r: {"bug": "kv-cache-off-by-one"}),
    Fault("position-ids-dropped", "instantiation", ("I314",), "cost", (LM,), ("gpt2",),
          lambda rng, r: {"bug": "position-ids-dropped"}),
]}


def applicable(kind: str, model: str, family: str) -> list[Fault]:
    """The faults (healthy first) that a (family, model) pair can carry."""
    out = []
    for f in FAULTS.values():
        if kind not in f.kinds or (f.models is not None and model not in f.models):
            continue
        if f.name == "length-shift" and family == "modadd":  # one length only
            continue
        if f.name == "one-layer" and family != "copy":  # the induction task (P406's rule)
            continue
        out.append(f)
    return out
