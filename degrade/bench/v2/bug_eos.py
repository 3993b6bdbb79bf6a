"""DegradeBench v2 practitioner bug `eos-masked-as-padding` (issue 16; I310, I316): every row ends
with an EOS token, the tokenizer's pad token is that EOS, and the collator masks the pad id in the
labels, so EOS is never a training target (transformers #23530, trl #976). The user's eval rows go
through the same collator (their logged eval numbers look perfect); the correct evaluation decodes
the answer *and* its EOS from the clean rows, so a model that never learned to stop loses one
target in k+1 (proof: cost against the twin, which has no EOS to learn).

Its own module, like bugs.py, so that the other cases' cache keys do not cover it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from degrade.bench.case import Built
from degrade.bench.families import write_data
from degrade.bench.v2.build import PROOF_ROWS, _logged, _train_hf, rows_of
from degrade.bench.v2.evaluate import evaluate
from degrade.bench.v2.models import build_model
from degrade.bench.v2.recipe import Recipe
from degrade.bench.v2.tasks import IGNORE, model_vocab


def ended(row: dict, eos: int, target: bool) -> dict:
    """The row with EOS appended: a target, or masked as the collator masks the pad id."""
    return {"input_ids": row["input_ids"] + [eos], "labels": row["labels"] + [eos if target else IGNORE]}


def build_eos_case(folder: Path, recipe: Recipe, bug: dict[str, Any]) -> Built:
    folder, r = Path(folder), recipe
    train, shown, clean = rows_of(r)
    vocab = model_vocab(r.family, r.vocab)
    eos = vocab  # one token more than the task uses: EOS is never an answer symbol
    train, shown = ([ended(x, eos, target=False) for x in rows] for rows in (train, shown))
    clean = [ended(x, eos, target=True) for x in clean]
    train_path, eval_path = write_data(folder, train, shown)
    model = build_model(r.model, vocab + 1, width=r.width, layers=r.layers, seed=r.seed, dropout=r.dropout)
    model.config.eos_token_id = model.config.pad_token_id = eos  # tokenizer.pad_token = tokenizer.eos_token
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = model.generation_config.pad_token_id = eos
    _train_hf(folder / "run", model, train, shown, r, max(1, math.ceil(r.steps * r.stop_fraction)))
    built = Built(folder / "run", train_path, eval_path)
    proof = {"recipe": r.to_dict(), "bug": bug, "correct": evaluate(model, clean[:PROOF_ROWS], r.kind),
             "correct_on_shown": evaluate(model, shown[:PROOF_ROWS], r.kind), "logged": _logged(built.run_dir)}
    (folder / "proof.json").write_text(json.dumps(proof, indent=1))
    return built
