"""The healthy recipe of a (family, model class, generator seed), and a fault's changes to it.

Sizes are drawn from the seed (vocabulary, width, instance lengths, modulus), so two seeds of the
same family differ in more than their initialisation. The schedule is fixed per kind (sort gets 900 steps: at 600 its
healthy runs were still gaining 1-2.5 accuracy points in their last 30%), chosen so that the
healthy runs of most seeds meet the convergence criterion (proof.py) on one CPU thread in well
under a minute.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from degrade.bench.v2.tasks import CLS, kind_of


@dataclass(frozen=True)
class Recipe:
    family: str
    model: str
    seed: int
    vocab: int
    width: int
    layers: int
    n_train: int
    n_eval: int
    train_length: tuple[int, int]
    eval_length: tuple[int, int]
    steps: int
    lr: float
    batch_size: int
    weight_decay: float
    schedule: str
    writer: str = "hf-trainer"  # hf-trainer | recorder | lightning (tinygpt runs)
    # fault switches (healthy values)
    stop_fraction: float = 1.0
    train_noise: float = 0.0
    frozen_blocks: int = 0
    train_fraction: float = 1.0
    train_unique: float = 1.0
    eval_overlap: float = 0.0
    dropout: float = 0.0
    eval_train_mode: bool = False
    eval_noise: float = 0.0
    train_length_fraction: float = 1.0
    model_switches: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_fault(self, params: dict[str, Any]) -> "Recipe":
        return replace(self, **params)

    @property
    def kind(self) -> str:
        return kind_of(self.family)


_LENGTHS = {"copy": (4, 8), "sort": (4, 8), "reverse": (4, 8), "translate": (4, 8), "kv": (3, 6), "addition": (2, 4), "order": (8, 14),
            "dyck": (6, 14), "bigram": (8, 14), "lexical": (8, 16), "review": (6, 14), "modadd": (0, 0)}


def healthy_recipe(family: str, model: str, seed: int) -> Recipe:
    rng = np.random.default_rng([seed, 17])
    lo, hi = _LENGTHS[family]
    width = int(rng.choice([48, 64, 96]))
    if family == "modadd":
        p = int(rng.choice([23, 29, 31]))
        writer = "hf-trainer" if model != "tinygpt" else ("lightning" if seed % 2 else "recorder")
        return Recipe(family, model, seed, vocab=p, width=width, layers=1, n_train=0, n_eval=0, writer=writer,
                      train_length=(0, 0), eval_length=(0, 0), steps=600, lr=1e-3, batch_size=128,
                      weight_decay=1.0, schedule="constant_with_warmup")
    vocab = int(rng.integers(8, 17)) if family in ("copy", "sort", "reverse", "translate") else int(rng.integers(12, 25))
    cls = kind_of(family) == CLS
    if model == "minilm":  # a fine-tune of a pretrained encoder: the usual small LR, few steps
        return Recipe(family, model, seed, vocab=vocab, width=384, layers=6, n_train=1000, n_eval=256,
                      train_length=(lo, hi), eval_length=(lo, hi), steps=120, lr=5e-5, batch_size=32,
                      weight_decay=0.01, schedule="linear")
    writer = "hf-trainer" if model != "tinygpt" else ("lightning" if seed % 2 else "recorder")
    return Recipe(family, model, seed, vocab=vocab, width=width, layers=2, writer=writer,
                  n_train=3000 if cls else 4000, n_eval=256, train_length=(lo, hi), eval_length=(lo, hi),
                  steps=400 if cls else (900 if family == "sort" else 600), lr=2e-3 if cls else 3e-3, batch_size=64,
                  weight_decay=0.01, schedule="linear")
