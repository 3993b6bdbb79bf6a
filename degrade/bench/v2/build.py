"""Train one DegradeBench v2 case from its recipe, and write what proves its fault.

    FOLDER/run/          the run dir (HF Trainer output_dir, or the Recorder's folder for tinygpt)
    FOLDER/train.jsonl   the training rows the run trained on (as the user has them)
    FOLDER/eval.jsonl    the eval rows the run evaluated on (contaminated or noisy for observation faults)
    FOLDER/proof.json    recipe, the correct evaluation on clean held-out rows, the logged numbers

The clean held-out rows stay in memory: degrade is only ever given what a user would have.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from degrade.bench.case import Built
from degrade.bench.families import write_data
from degrade.bench.v2.evaluate import evaluate
from degrade.bench.v2.models import build_model
from degrade.bench.v2.recipe import Recipe
from degrade.bench.v2.tasks import IGNORE, family_rows, model_vocab

TINYGPT_FACTORY = "degrade.bench.families:tiny_gpt_model"
PROOF_ROWS = 128  # clean held-out rows of the correct evaluation (decoding is a forward per token)


def rows_of(r: Recipe) -> tuple[list[dict], list[dict], list[dict]]:
    """(train rows, the eval rows the run logs on, clean held-out rows)."""
    lo, hi = r.train_length
    train_len = (lo, max(lo, round(hi * r.train_length_fraction))) if r.train_length_fraction < 1 else (lo, hi)
    train, clean = family_rows(r.family, r.n_train, r.n_eval, r.vocab, r.seed, train_len, r.eval_length)
    rng = np.random.default_rng([r.seed, 99])
    if r.train_fraction < 1:
        train = train[:max(16, int(len(train) * r.train_fraction))]
    if r.train_unique < 1:  # a few rows repeated to the full size, in a shuffled order
        unique = train[:max(16, int(len(train) * r.train_unique))]
        train = [unique[int(i) % len(unique)] for i in rng.permutation(len(train))]
    if r.train_noise:
        train = [_noisy(row, r, rng) if rng.random() < r.train_noise else row for row in train]
    shown = list(clean)
    if r.eval_overlap:
        k = int(len(shown) * r.eval_overlap)
        picks = rng.choice(len(train), size=min(k, len(train)), replace=False)
        shown = [train[int(i)] for i in picks] + shown[len(picks):]
    if r.eval_noise:
        shown = [_noisy(row, r, rng) if rng.random() < r.eval_noise else row for row in shown]
    return train, shown, clean


def _noisy(row: dict, r: Recipe, rng) -> dict:
    """A wrong target: the other class, or a different random token for every answer position."""
    if "label" in row:
        return {**row, "label": 1 - row["label"]}
    vocab = model_vocab(r.family, r.vocab) - 1  # answers never use the separator/query token
    labels = [t if t == IGNORE else int((t + rng.integers(1, vocab)) % vocab) for t in row["labels"]]
    ids = [t if lab == IGNORE else lab for t, lab in zip(row["input_ids"], labels)]
    return {"input_ids": ids, "labels": labels}


def _as_seq2seq(row: dict) -> dict:
    start = next(i for i, t in enumerate(row["labels"]) if t != IGNORE)
    return {"input_ids": row["input_ids"][:start], "labels": row["labels"][start:]}


def build_case(folder: Path, recipe: Recipe) -> Built:
    """A v2 case's builder. It lives here, not in generate.py, so that a case's cache key
    (runner.case_key: the builder's arguments and the sources its module imports) covers the
    code that trains it and not the code that deals the cases: re-dealing rebuilds only the
    cases whose recipes changed."""
    return build(folder, recipe)


def build(folder: Path, r: Recipe) -> Built:
    import torch
    folder = Path(folder)
    train, shown, clean = rows_of(r)
    tokenizer = None
    if r.model == "minilm":  # text rows, tokenised by the pretrained model's own tokenizer
        from transformers import AutoTokenizer

        from degrade.bench.v2.models import minilm_dir
        tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
        train, shown, clean = ([{**row, "input_ids": tokenizer(row["text"])["input_ids"]} for row in rows]
                               for rows in (train, shown, clean))
    if r.model == "bart":  # the prompt is the source, the answer the target
        train, shown, clean = ([_as_seq2seq(row) for row in rows] for rows in (train, shown, clean))
    train_path, eval_path = write_data(folder, train, shown)
    vocab = model_vocab(r.family, r.vocab)
    last = max(1, math.ceil(r.steps * r.stop_fraction))
    if r.model == "tinygpt":
        from degrade.bench.tiny_gpt import TinyGPT
        from degrade.bench.train_plain import train_plain
        cfg = {**build_model("tinygpt", vocab, width=r.width, layers=r.layers, seed=r.seed), **r.model_switches}
        torch.manual_seed(r.seed)
        model = TinyGPT(cfg)
        common = dict(factory=TINYGPT_FACTORY, seed=r.seed, max_steps=r.steps, lr=r.lr,
                      batch_size=r.batch_size, warmup_steps=max(1, r.steps // 10),
                      eval_steps=max(1, r.steps // 10), weight_decay=r.weight_decay, stop_at=last,
                      train_data=train_path, eval_data=eval_path)
        if r.writer == "lightning":
            from degrade.bench.v2.train_lightning import train_lightning
            train_lightning(folder / "run", model, train, shown, params={"model": cfg}, **common)
        else:
            train_plain(folder / "run", model, train, shown, params={"model": cfg}, logging_steps=5,
                        save_steps=max(1, math.ceil(last / 2)), **common)
        built = Built(folder / "run", train_path, eval_path, TINYGPT_FACTORY)
    else:
        model = build_model(r.model, vocab, width=r.width, layers=r.layers, seed=r.seed, dropout=r.dropout)
        if r.model == "minilm" and r.dropout:
            model.config.hidden_dropout_prob = r.dropout  # an eval-in-train-mode fault: stronger dropout
            for m in model.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.p = r.dropout
        for block in _blocks(model)[:r.frozen_blocks]:
            for p in block.parameters():
                p.requires_grad = False
        _train_hf(folder / "run", model, train, shown, r, last)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(folder / "run"))
        built = Built(folder / "run", train_path, eval_path)
    proof = {"recipe": r.to_dict(), "correct": evaluate(model, clean[:PROOF_ROWS], r.kind),
             "correct_on_shown": evaluate(model, shown[:PROOF_ROWS], r.kind), "logged": _logged(built.run_dir)}
    (folder / "proof.json").write_text(json.dumps(proof, indent=1))
    return built


def _train_hf(out: Path, model, train, shown, r: Recipe, last: int) -> None:
    from transformers import Trainer, TrainerCallback

    from degrade.bench.train import train_hf

    class StopAt(TrainerCallback):
        """The job killed at step `last` (a time limit): the schedule planned r.steps."""

        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= last:
                control.should_training_stop = True
                control.should_evaluate = control.should_save = True

    class EvalInTrainMode(Trainer):
        """An 'MC-dropout' evaluation left in: dropout stays on while the Trainer evaluates."""

        def evaluate(self, *a, **kw):
            was = self.model.training
            self.model.train()
            try:
                return super().evaluate(*a, **kw)
            finally:
                self.model.train(was)

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            model.train()
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    train_hf(out, model, train, shown, max_steps=r.steps, lr=r.lr, batch_size=r.batch_size,
             weight_decay=r.weight_decay, warmup_steps=max(1, r.steps // 10),
             eval_steps=max(1, r.steps // 10), save_steps=max(1, math.ceil(last / 2)), logging_steps=5,
             seed=r.seed, lr_scheduler_type=r.schedule,
             trainer_class=EvalInTrainMode if r.eval_train_mode else None,
             callbacks=[StopAt()] if last < r.steps else None)


def _blocks(model) -> list:
    for path in ("bert.encoder.layer", "distilbert.transformer.layer", "transformer.h", "model.layers",
                 "model.encoder.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return list(obj)
    raise ValueError(f"no transformer blocks found in {type(model).__name__}")


def _logged(run_dir: Path) -> dict:
    """The run's own last eval numbers and its eval curve [(step, loss, accuracy)]."""
    state = run_dir / "trainer_state.json"
    if state.is_file():
        recs = [r for r in json.loads(state.read_text())["log_history"] if "eval_loss" in r]
        curve = [(r["step"], r["eval_loss"], r.get("eval_accuracy")) for r in recs]
        last = recs[-1] if recs else {}
        return {"eval_loss": last.get("eval_loss"), "eval_accuracy": last.get("eval_accuracy"), "curve": curve}
    curve, last = [], {}
    scalars = run_dir / "degrade" / "scalars.jsonl"
    for line in scalars.read_text().splitlines() if scalars.is_file() else []:
        rec = json.loads(line)
        if "eval_loss" in rec:
            curve.append((rec.get("step"), rec["eval_loss"], rec.get("eval_accuracy")))
            last = rec
    return {"eval_loss": last.get("eval_loss"), "eval_accuracy": last.get("eval_accuracy"), "curve": curve}

