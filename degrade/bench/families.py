"""Shared data and run helpers for the three DegradeBench task families, for every cases/ module.

- copy: `x_1..x_k SEP x_1..x_k`, decoder-only (tiny GPT-2 or TinyGPT);
- modadd: `a b = c` with c = (a + b) mod p, decoder-only (the grokking setting, shared/seeds/004);
- order: is token 1 before token 2?  sequence classification with a tiny BERT.

Each `*_data` returns (train_rows, eval_rows) with no eval input repeated in the training data, so
a healthy case measures generalisation. `write_data` puts them next to the run dir (never inside
it); `hf_run` / `plain_run` train a real run and return the case's Built; `final_eval` reads the
last recorded eval numbers back (to report how good a healthy model really is).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from degrade.bench.case import Built
from degrade.bench.tasks import copy_rows, modular_addition_rows, order_rows
from degrade.bench.train import write_jsonl

TINY_GPT_FACTORY = "degrade.bench.families:tiny_gpt_model"


def copy_data(n_train: int, n_eval: int, *, vocab: int = 16, train_k: tuple[int, int] = (4, 8),
              eval_k: tuple[int, int] | None = None, seed: int = 1) -> tuple[list[dict], list[dict]]:
    """Copy-task rows over symbols 0..vocab-1, separator `vocab` (a model needs vocab+1 tokens)."""
    eval_k = eval_k or train_k
    train = copy_rows(n_train, vocab=vocab, min_k=train_k[0], max_k=train_k[1], seed=seed)
    pool = copy_rows(4 * n_eval, vocab=vocab, min_k=eval_k[0], max_k=eval_k[1], seed=seed + 1000)
    return train, _unseen(pool, train, n_eval)


def modadd_data(p: int = 23, train_fraction: float = 0.5, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """All (a, b) pairs split into train and held-out eval; tokens 0..p-1 numbers, p is '='."""
    return modular_addition_rows(p=p, train_fraction=train_fraction, seed=seed)


def order_data(n_train: int, n_eval: int, *, vocab: int = 12, length: int = 10,
               seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Order-classification rows ([CLS]=0, markers 1 and 2, filler 3..vocab-1)."""
    train = order_rows(n_train, vocab=vocab, length=length, seed=seed)
    pool = order_rows(4 * n_eval, vocab=vocab, length=length, seed=seed + 1000)
    return train, _unseen(pool, train, n_eval)


def _unseen(pool: list[dict], train: list[dict], n: int) -> list[dict]:
    seen = {tuple(r["input_ids"]) for r in train}
    out = []
    for row in pool:
        key = tuple(row["input_ids"])
        if key not in seen:
            seen.add(key)
            out.append(row)
            if len(out) == n:
                break
    return out


def write_data(folder: Path, train: list[dict], evals: list[dict]) -> tuple[Path, Path]:
    return write_jsonl(train, folder / "train.jsonl"), write_jsonl(evals, folder / "eval.jsonl")


def hf_run(folder: Path, model, train: list[dict], evals: list[dict], **train_kwargs: Any) -> Built:
    """Write the data next to folder/run, train `model` there with the HF Trainer, return Built."""
    from degrade.bench.train import train_hf
    train_path, eval_path = write_data(folder, train, evals)
    train_hf(folder / "run", model, train, evals, **train_kwargs)
    return Built(folder / "run", train_path, eval_path)


def plain_run(folder: Path, model_cfg: dict, train: list[dict], evals: list[dict], *,
              factory: str = TINY_GPT_FACTORY, seed: int = 0, **train_kwargs: Any) -> Built:
    """Train a TinyGPT built from `model_cfg` in the plain loop recorded by degrade's Recorder;
    degrade rebuilds the model from the recorded params through `factory`."""
    import torch

    from degrade.bench.tiny_gpt import TinyGPT
    from degrade.bench.train_plain import train_plain
    train_path, eval_path = write_data(folder, train, evals)
    torch.manual_seed(seed)
    model = TinyGPT(model_cfg)
    train_plain(folder / "run", model, train, evals, params={"model": model_cfg}, factory=factory,
                seed=seed, train_data=train_path, eval_data=eval_path, **train_kwargs)
    return Built(folder / "run", train_path, eval_path, factory)


def tiny_gpt_model(config: dict):
    """--model-factory for TinyGPT runs: the model the run's recorded params describe. The
    argument is required on purpose: degrade passes the run's params only to a factory that
    takes a positional argument (degrade/run/load.py)."""
    from degrade.bench.tiny_gpt import build
    return build(config)


def final_eval(run_dir: Path) -> dict[str, float | None]:
    """The last eval loss/accuracy a run recorded: Trainer's trainer_state.json or Recorder's
    degrade/scalars.jsonl."""
    run_dir = Path(run_dir)
    state = run_dir / "trainer_state.json"
    if state.is_file():
        evals = [r for r in json.loads(state.read_text())["log_history"] if "eval_loss" in r]
        last = evals[-1] if evals else {}
        return {"eval_loss": last.get("eval_loss"), "eval_accuracy": last.get("eval_accuracy")}
    scalars = run_dir / "degrade" / "scalars.jsonl"
    last: dict = {}
    if scalars.is_file():
        for line in scalars.read_text().splitlines():
            rec = json.loads(line)
            if any(str(k).startswith("eval") for k in rec):
                last = rec
    return {"eval_loss": last.get("eval_loss"), "eval_accuracy": last.get("eval_accuracy")}
