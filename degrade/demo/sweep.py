"""A small real sweep to try the many-run commands on: tiny GPT-2s trained with the Hugging Face
Trainer and degrade's callback on the copy task, over a grid of learning rates and training-set
sizes (the notebook, benchmarks/sweep.py and the sweep tests use it).

    from degrade.demo.sweep import train_sweep
    runs, eval_file = train_sweep("sweep/", lrs=(3e-4, 3e-3), sizes=(32, 128, 512))
    # then: degrade sweep sweep/ --eval-data sweep/eval.jsonl

Each run is `ROOT/lr<lr>-n<size>/`, with its weights, trainer_state.json and degrade/manifest.json
(params, data.train.n); every run is evaluated on the same held-out rows, written once to
ROOT/eval.jsonl. Runs already trained are reused.
"""
from __future__ import annotations

from pathlib import Path

VOCAB = 16  # copy-task symbols; the separator is token VOCAB


def train_sweep(root: str | Path, *, lrs: tuple[float, ...] = (3e-4, 3e-3), sizes: tuple[int, ...] = (32, 128, 512),
                max_steps: int = 60, n_eval: int = 128, seed: int = 0, n_layer: int = 1,
                n_embd: int = 32) -> tuple[list[Path], Path]:
    from degrade.bench.families import copy_data
    from degrade.bench.scenarios import quiet_training
    from degrade.bench.train import tiny_gpt2, train_hf, write_jsonl
    from degrade.record.callback import DegradeCallback
    root = Path(root)
    train, evals = copy_data(max(sizes), n_eval, vocab=VOCAB, seed=seed + 1)
    eval_file = write_jsonl(evals, root / "eval.jsonl")
    runs = []
    for lr in lrs:
        for n in sizes:
            folder = root / f"lr{lr:g}-n{n}"
            if not (folder / "trainer_state.json").is_file():
                with quiet_training():
                    train_hf(folder, tiny_gpt2(VOCAB + 1, n_layer=n_layer, n_embd=n_embd, n_head=2, seed=seed),
                             train[:n], evals, max_steps=max_steps, lr=lr, batch_size=16,
                             warmup_steps=max_steps // 10, eval_steps=max(1, max_steps // 4),
                             logging_steps=max(1, max_steps // 12), seed=seed,
                             callbacks=[DegradeCallback(every=0)])
            runs.append(folder)
    return runs, eval_file
