"""I310 eos-never-a-target (issue 16, item 2): pad_token = eos_token with the pad id masked in the
labels (transformers #23530, trl #976) masks every EOS; the check says so, and stays quiet when the
real EOS keeps its label."""
from __future__ import annotations

import pytest

from degrade.bench.tasks import copy_rows
from degrade.bench.train import write_jsonl
from degrade.checks.instantiation.i310_eos_target import EosNeverATarget
from degrade.run import RunOptions, open_run

from tests.helpers import run_check

EOS = 17  # its own id: the copy task uses 0..15 and 16 as the separator


@pytest.mark.parametrize("pad_is_eos", [True, False])
def test_eos_masked_as_padding(tmp_path, pad_is_eos):
    from transformers import GPT2Config, GPT2LMHeadModel
    GPT2LMHeadModel(GPT2Config(vocab_size=18, n_positions=64, n_embd=32, n_layer=1, n_head=4,
                               eos_token_id=EOS, pad_token_id=EOS, bos_token_id=EOS)).save_pretrained(tmp_path / "run")
    rows = []
    for r in copy_rows(200, seed=1):
        ids, labels = r["input_ids"] + [EOS, EOS, EOS], r["labels"] + [EOS, EOS, EOS]  # EOS, then 2 pads
        if pad_is_eos:  # the collator masks the pad id in the labels, and the pad id is EOS
            labels = [-100 if t == EOS else t for t in labels]
        else:  # the real EOS stays a target; only the padding after it is masked
            labels = labels[:-2] + [-100, -100]
        rows.append({"input_ids": ids, "labels": labels})
    tr = write_jsonl(rows, tmp_path / "train.jsonl")
    run = open_run(tmp_path / "run", RunOptions(train_data=str(tr), budget="fast"))
    found = run_check(run, EosNeverATarget)
    assert [f.severity.value for f in found] == (["error"] if pad_is_eos else ["info"]), [f.message for f in found]
    assert found[0].evidence["rows_with_eos"] == 200
