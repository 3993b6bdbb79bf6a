"""A model whose forward turns inf/NaN (an overflowing float16 export, a diverged run) has learned
neither something nor nothing: the checks that read its outputs skip with the reason instead of
reading NaN as "never fires" (R211), "not learned" (R213) or "another label shift" (I308)."""
from __future__ import annotations

import torch

from degrade.bench.tasks import copy_rows
from degrade.checks.instantiation.i308_label_alignment import LabelAlignment
from degrade.checks.reachability.r211_dead_units import DeadUnits
from degrade.checks.reachability.r213_not_learned import NotLearned
from degrade.suite import run_one

from tests.helpers import hf_run


def test_non_finite_outputs_are_not_read(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=17, n_positions=64, n_embd=32, n_layer=1, n_head=4))
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("inf")
    run = hf_run(tmp_path, "run", model, copy_rows(32, seed=1))
    for cls in (DeadUnits, NotLearned, LabelAlignment):
        res = run_one(run, cls, {}, preconditions=False)
        assert res.status == "skipped" and "non-finite" in res.reason, (cls.code, res.status, res.reason)
