"""DegradeBench v2 practitioner bugs in the model's code (issue 16): a GPT-2 whose forward gets one
thing wrong, trained the healthy twin's way. The bug is named in config.json
(`degrade_bench_bug`), and degrade loads the model through `--model-factory` FACTORY, as a user
with their own model class does.

| bug | codes | what the forward gets wrong | where it costs (the proof's evaluation) |
|---|---|---|---|
| attention-dropout-in-eval | I309 | dropout on the attention output with training=True, so it stays on under model.eval() (transformers PR #33844, torchtune PR #1049) | greedy decoding in eval mode |
| kv-cache-off-by-one | I312 | with a cache, the new tokens' positions are the cache length + 1 + i | greedy generation with the KV cache (generate()) |
| position-ids-dropped | I314 | position_ids are accepted and thrown away, so a left-padded prompt is placed at its padded positions (unsloth #3699) | greedy generation of left-padded batches of 16 prompts, as serving batches them |

Teacher-forced training never uses the cache or left padding, so those two models train exactly
like their twin: the cost is where the model is used.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from degrade.bench.case import Built
from degrade.bench.families import write_data
from degrade.bench.v2.build import PROOF_ROWS, _logged, _train_hf, rows_of
from degrade.bench.v2.evaluate import evaluate
from degrade.bench.v2.models import build_model
from degrade.bench.v2.recipe import Recipe
from degrade.bench.v2.tasks import IGNORE, model_vocab

FACTORY = "degrade.bench.v2.bug_models:gpt2_with_bug"


def gpt2_with_bug(run_config: dict):
    """--model-factory: the GPT-2 of config.json with the bug it names."""
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config.from_dict({k: v for k, v in run_config.items() if k != "architectures"})
    bug = run_config.get("degrade_bench_bug")

    class BuggyGPT2(GPT2LMHeadModel):
        def forward(self, input_ids=None, position_ids=None, **kwargs):
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            past = cache.get_seq_length() if hasattr(cache, "get_seq_length") else 0
            if bug == "position-ids-dropped":
                position_ids = None
            elif bug == "kv-cache-off-by-one" and past > 0 and input_ids is not None:
                position_ids = (past + 1 + torch.arange(input_ids.shape[1], device=input_ids.device))[None]
            return super().forward(input_ids=input_ids, position_ids=position_ids, **kwargs)

    model = BuggyGPT2(cfg)
    if bug == "attention-dropout-in-eval":
        p = float(run_config.get("degrade_bench_p", 0.3))
        def drop(mod, args, out):  # GPT2Attention returns (output, weights)
            return (torch.nn.functional.dropout(out[0], p, training=True),) + tuple(out[1:])
        for block in model.transformer.h:
            block.attn.register_forward_hook(drop)
    return model


def build_model_bug_case(folder: Path, recipe: Recipe, bug: dict[str, Any]) -> Built:
    folder, r = Path(folder), recipe
    train, shown, clean = rows_of(r)
    train_path, eval_path = write_data(folder, train, shown)
    twin = build_model(r.model, model_vocab(r.family, r.vocab), width=r.width, layers=r.layers, seed=r.seed,
                       dropout=r.dropout)  # the twin's initialisation, carried over
    cfg = {**twin.config.to_dict(), "degrade_bench_bug": bug["bug"], "degrade_bench_p": bug.get("p", 0.0)}
    model = gpt2_with_bug(cfg)
    model.load_state_dict(twin.state_dict())
    _train_hf(folder / "run", model, train, shown, r, max(1, math.ceil(r.steps * r.stop_fraction)))
    built = Built(folder / "run", train_path, eval_path, FACTORY)
    rows = clean[:PROOF_ROWS]
    correct = (generation_accuracy(model, rows, left_padded=bug["bug"] == "position-ids-dropped")
               if bug["bug"] != "attention-dropout-in-eval" else evaluate(model, rows, r.kind))
    proof = {"recipe": r.to_dict(), "bug": bug, "correct": correct,
             "teacher_forced": evaluate(model, rows, r.kind), "logged": _logged(built.run_dir)}
    (folder / "proof.json").write_text(json.dumps(proof, indent=1))
    return built


@torch.no_grad()
def generation_accuracy(model, rows: list[dict], left_padded: bool, batch: int = 16) -> dict[str, float]:
    """Greedy generate() (KV cache on) of each row's answer from its prompt, one row at a time or
    in left-padded batches; the share of answer tokens right (the answer: its targets in order)."""
    model.eval()
    hits = total = 0
    for start in range(0, len(rows), batch if left_padded else 1):
        chunk = rows[start:start + (batch if left_padded else 1)]
        prompts = [r["input_ids"][:next(i for i, t in enumerate(r["labels"]) if t != IGNORE)] for r in chunk]
        answers = [[t for t in r["labels"] if t != IGNORE] for r in chunk]
        width = max(map(len, prompts))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(map(len, answers)),
                             min_new_tokens=max(map(len, answers)), do_sample=False, pad_token_id=0,
                             use_cache=True)[:, width:]
        for a, got in zip(answers, out.tolist()):
            hits += sum(int(x == y) for x, y in zip(a, got))
            total += len(a)
    return {"accuracy": hits / max(total, 1), "loss": math.nan}
