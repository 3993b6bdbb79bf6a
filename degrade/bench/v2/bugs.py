"""DegradeBench v2 practitioner bugs: the training-code faults of issue 16, built the way they happen
in the wild on the Hugging Face language models (gpt2, llama), one per bug family whose cost a
correct evaluation can see.

| bug | layer | codes | how it is built | severity drawn from |
|---|---|---|---|---|
| labels-shifted-twice | instantiation | I308 | the collator's labels are already shifted (labels[t] = token t+1) and the model shifts again: it learns token t+2 (transformers PR #37830, #27517) | 1 or 2 extra shifts |
| loss-summed-over-accumulation | instantiation | I315 | gradient accumulation with a Trainer subclass whose compute_loss drops num_items_in_batch, so the micro-batch means are summed (transformers #35438) | 2, 4 or 8 micro-batches per step (same effective batch) |
| eos-masked-as-padding | instantiation | I310, I316 | bug_eos.py: pad = EOS, masked in the labels | - |
| fp16-overflow | instantiation | I313 | bug_precision.py: a float16 export whose value activations overflow | 2-8x past float16's maximum |

A bug case is built by `build_bug_case` from its twin's recipe and the bug's parameters, outside
build.py on purpose: the cache keys of the other v2 cases cover build.py's source, and a bug must
not rebuild them. The proofs are proof.py's: `cost` against the twin, and `logged-train` (the last
logged training loss against a correct evaluation of the final model on training rows).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from degrade.bench.case import Built
from degrade.bench.families import write_data
from degrade.bench.v2.build import PROOF_ROWS, _logged, rows_of
from degrade.bench.v2.evaluate import evaluate
from degrade.bench.v2.models import build_model
from degrade.bench.v2.recipe import Recipe
from degrade.bench.v2.tasks import IGNORE, model_vocab


def pre_shifted(row: dict, k: int) -> dict:
    """The row as a collator that shifts labels itself hands it to a model that shifts again."""
    return {**row, "labels": row["labels"][k:] + [IGNORE] * k}


def build_bug_case(folder: Path, recipe: Recipe, bug: dict[str, Any]) -> Built:
    from degrade.bench.train import train_hf
    folder, r = Path(folder), recipe
    train, shown, clean = rows_of(r)
    if bug.get("label_shift"):  # the user's pipeline shifts every split it feeds the model
        train, shown = ([pre_shifted(row, bug["label_shift"]) for row in rows] for rows in (train, shown))
    train_path, eval_path = write_data(folder, train, shown)
    model = build_model(r.model, model_vocab(r.family, r.vocab), width=r.width, layers=r.layers, seed=r.seed,
                        dropout=r.dropout)
    m = int(bug.get("accumulation", 1))
    train_hf(folder / "run", model, train, shown, max_steps=r.steps, lr=r.lr, batch_size=r.batch_size // m,
             gradient_accumulation_steps=m, weight_decay=r.weight_decay, warmup_steps=max(1, r.steps // 10),
             eval_steps=max(1, r.steps // 10), save_steps=max(1, math.ceil(r.steps / 2)), logging_steps=5, seed=r.seed,
             lr_scheduler_type=r.schedule, trainer_class=_summing_trainer() if bug.get("loss_summed") else None)
    built = Built(folder / "run", train_path, eval_path)
    proof = {"recipe": r.to_dict(), "bug": bug, "correct": evaluate(model, clean[:PROOF_ROWS], r.kind),
             "correct_on_shown": evaluate(model, shown[:PROOF_ROWS], r.kind), "logged": _logged(built.run_dir),
             "correct_train": evaluate(model, train[:PROOF_ROWS], r.kind),
             "logged_train_loss": _last_train_loss(built.run_dir)}
    (folder / "proof.json").write_text(json.dumps(proof, indent=1))
    return built


def _summing_trainer():
    from transformers import Trainer

    class SumsOverAccumulation(Trainer):
        """compute_loss as pre-#34191 tutorials wrote it: the micro-batch mean, num_items_in_batch
        unused; the Trainer counts the loss as already scaled and sums the micro-batches."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(**inputs)
            return (out.loss, out) if return_outputs else out.loss
    return SumsOverAccumulation


def _last_train_loss(run_dir: Path) -> float | None:
    state = json.loads((run_dir / "trainer_state.json").read_text())
    losses = [rec["loss"] for rec in state["log_history"] if "loss" in rec and math.isfinite(rec["loss"])]
    return losses[-1] if losses else None
