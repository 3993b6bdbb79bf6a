"""I308 label-alignment (issue 16, item 1): a real tiny GPT-2 trained with the Hugging Face Trainer
on labels a collator already shifted (the model shifts them again, as in transformers JetMoe PR
#37830) predicts the token two places ahead, and I308 says so; the same model trained on labels =
input_ids (the model's own shift) raises nothing."""
from __future__ import annotations

import pytest

from conftest import one_thread

IGNORE = -100


def _run(tmp_path, pre_shift: bool):
    from degrade.bench.tasks import copy_rows
    from degrade.bench.train import tiny_gpt2, train_hf, write_jsonl
    from degrade.run import RunOptions, open_run

    def shifted(rows):  # what a collator that shifts the labels itself hands the model
        return [{"input_ids": r["input_ids"], "labels": r["labels"][1:] + [IGNORE]} for r in rows]
    train, ev = copy_rows(2000, seed=1), copy_rows(128, seed=2)
    if pre_shift:
        train, ev = shifted(train), shifted(ev)
    with one_thread():
        run_dir = train_hf(tmp_path / "run", tiny_gpt2(17, n_embd=48), train, ev, max_steps=250, lr=3e-3,
                           batch_size=32, eval_steps=50, logging_steps=25)
    return open_run(run_dir, RunOptions(eval_data=str(write_jsonl(ev, tmp_path / "eval.jsonl")), budget="fast"))


@pytest.mark.slow
@pytest.mark.parametrize("pre_shift", [True, False])
def test_labels_shifted_twice(tmp_path, pre_shift):
    from degrade.checks.instantiation.i308_label_alignment import LabelAlignment
    from tests.helpers import run_check
    run = _run(tmp_path, pre_shift)
    with one_thread():
        found = run_check(run, LabelAlignment)
    if pre_shift:
        assert [f.severity.value for f in found] == ["error"], [f.message for f in found]
        ev = found[0].evidence
        assert ev["best_other_shift"] == 2 and ev["labels_vs_input_ids"]["equal_to_next_input"] > 0.9
    else:
        assert found == [], [f.message for f in found]
