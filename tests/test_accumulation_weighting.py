"""I315 accumulation-weighting (issue 16, item 5): a Trainer subclass whose compute_loss drops
num_items_in_batch (the #35438 pattern: the Trainer counts the loss as scaled, so the m micro-batch
means are summed) logs a loss m times the model's own; the stock Trainer with the same accumulation
does not. Variable-length rows, so the token weighting has something to weigh."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import degrade
from types import SimpleNamespace

from degrade.checks.instantiation.i315_accumulation_weighting import AccumulationWeighting, _micro_batches, _mis_weighting
from degrade.bench.train import write_jsonl
from degrade.run import RunOptions, open_run

from tests.helpers import run_check

ACCUMULATION = 4


def _rows(n: int, seed: int) -> list[list[int]]:
    """Copy rows of lengths 6..40: a b c | a b c, learnable in a few dozen steps."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        half = rng.integers(1, 30, size=int(rng.integers(3, 20))).tolist()
        out.append([1] + half + [2] + half)
    return out


def _collate(feats):
    """Right padding with id 0, labels masked on the padding (not on a pad id)."""
    width = max(len(f["input_ids"]) for f in feats)
    ids = torch.tensor([f["input_ids"] + [0] * (width - len(f["input_ids"])) for f in feats])
    mask = torch.tensor([[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in feats])
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def _train(out, trainer_class, record: bool = True, n_rows: int = 128):
    datasets = pytest.importorskip("datasets")
    from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=32, vocab_size=32, n_positions=64,
                                       bos_token_id=1, eos_token_id=2, pad_token_id=0))
    rows = _rows(n_rows, 1)
    train = datasets.Dataset.from_dict({"input_ids": rows})
    args = TrainingArguments(str(out), report_to="none", use_cpu=True, disable_tqdm=True, max_steps=24,
                             per_device_train_batch_size=4, gradient_accumulation_steps=ACCUMULATION,
                             learning_rate=3e-3, logging_steps=4, save_strategy="steps", save_steps=24,
                             seed=3, max_grad_norm=1.0)
    trainer = trainer_class(model=model, args=args, train_dataset=train, data_collator=_collate,
                            callbacks=[degrade.DegradeCallback(every=0)] if record else [])
    trainer.train()
    return open_run(out, RunOptions(train_data=str(write_jsonl([{"input_ids": r} for r in rows],
                                                               out.parent / "train.jsonl"))))


def _summing_trainer():
    from transformers import Trainer

    class SumsOverAccumulation(Trainer):
        """compute_loss from a pre-#34191 tutorial: the micro-batch mean, num_items_in_batch unused."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(**inputs)
            return (out.loss, out) if return_outputs else out.loss
    return SumsOverAccumulation


def test_loss_summed_over_accumulation_is_an_error(tmp_path):
    run = _train(tmp_path / "run", _summing_trainer())
    found = run_check(run, AccumulationWeighting)
    assert [f.severity.value for f in found] == ["error"], [f.message for f in found]
    ev = found[0].evidence
    assert ev["micro_batches_per_step"] == ACCUMULATION and 2.0 < ev["logged_ratio"] < 8.0


def test_the_stock_trainer_is_not_flagged(tmp_path):
    """Without degrade's callback: the accumulation is read from trainer_state.json's epoch counter."""
    from transformers import Trainer
    run = _train(tmp_path / "run", Trainer, record=False)
    found = run_check(run, AccumulationWeighting)
    assert all(f.severity.value == "info" for f in found), [f.message for f in found]
    ev = found[0].evidence
    assert ev["micro_batches_per_step"] == ACCUMULATION and ev["micro_batches_from"].startswith("inferred")
    assert 0.5 < ev["logged_ratio"] < 1.5


def test_an_epoch_that_ends_on_a_short_step_is_read(tmp_path):
    """124 rows in batches of 4 are 31 micro-batches an epoch: transformers >= 4.46 makes 8 steps of
    them (the last of 3), so micro-batches / steps is 3.875, not 4; the summed loss is still found."""
    run = _train(tmp_path / "run", _summing_trainer(), record=False, n_rows=124)
    found = run_check(run, AccumulationWeighting)
    assert [f.severity.value for f in found] == ["error"], [f.message for f in found]
    assert found[0].evidence["micro_batches_per_step"] == ACCUMULATION


def _counters(rows: int, batch: int, steps: int, epoch: float):
    history = SimpleNamespace(meta={"global_step": steps, "train_batch_size": batch, "epoch": epoch})
    return SimpleNamespace(recorded_arg=lambda k: None, history=history, train_pass=None, train_data=range(rows))


def test_micro_batches_that_several_accumulations_fit_are_a_range():
    # 7 micro-batches an epoch, two steps each epoch: 4, 5 and 6 micro-batches a step all give that
    assert _micro_batches(_counters(28, 4, 6, 3.0), 0.05)[0] == (4, 6)
    # one step an epoch fits any accumulation of 7 or more: unknown
    assert _micro_batches(_counters(28, 4, 3, 3.0), 0.05)[0] is None
    # no accumulation, stopped inside an epoch
    assert _micro_batches(_counters(100, 4, 30, 1.2), 0.05)[0] == (1, 1)


def test_mis_weighting_grows_with_the_length_spread():
    even = _mis_weighting(np.full(256, 20.0), 4, 4, 100, 0)["effective_token_share"]
    spread = _mis_weighting(np.asarray([2.0, 200.0] * 128), 4, 4, 100, 0)["effective_token_share"]
    assert even == pytest.approx(1.0) and spread < 0.9
