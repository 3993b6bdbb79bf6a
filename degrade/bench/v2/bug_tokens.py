"""DegradeBench v2 practitioner bug `doubled-bos` (issue 16; I311): the training and eval rows are
a chat template that writes BOS, tokenised by a tokenizer that adds BOS again, so every row opens
[BOS, BOS] (vLLM PR #16976, llama.cpp PR #7107); serving tokenises the plain prompt and opens with
one BOS. The correct evaluation runs the clean rows as served (proof: cost against the twin, whose
rows have no BOS: a model that learned its positions from offset 2 answers at offset 1).

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


def opened(row: dict, bos: int, times: int) -> dict:
    return {"input_ids": [bos] * times + row["input_ids"], "labels": [IGNORE] * times + row["labels"]}


def build_bos_case(folder: Path, recipe: Recipe, bug: dict[str, Any]) -> Built:
    folder, r = Path(folder), recipe
    train, shown, clean = rows_of(r)
    vocab = model_vocab(r.family, r.vocab)
    bos = vocab  # its own id: never an answer symbol
    train, shown = ([opened(x, bos, 2) for x in rows] for rows in (train, shown))
    clean = [opened(x, bos, 1) for x in clean]
    train_path, eval_path = write_data(folder, train, shown)
    model = build_model(r.model, vocab + 1, width=r.width, layers=r.layers, seed=r.seed, dropout=r.dropout)
    model.config.bos_token_id = bos
    _train_hf(folder / "run", model, train, shown, r, max(1, math.ceil(r.steps * r.stop_fraction)))
    built = Built(folder / "run", train_path, eval_path)
    proof = {"recipe": r.to_dict(), "bug": bug, "correct": evaluate(model, clean[:PROOF_ROWS], r.kind),
             "correct_on_shown": evaluate(model, shown[:PROOF_ROWS], r.kind), "logged": _logged(built.run_dir)}
    (folder / "proof.json").write_text(json.dumps(proof, indent=1))
    return built
