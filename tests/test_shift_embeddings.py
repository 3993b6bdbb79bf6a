"""O105 on the model's input embeddings: a shift the cheap features cannot see."""
from __future__ import annotations

import numpy as np
import torch

from degrade.bench.train import write_jsonl
from degrade.checks.observation.o105_distribution_shift import DistributionShift
from degrade.run import RunOptions, open_run
from degrade.suite import run_one

from tests.helpers import save_weights

from tests.shift_factories import VOCAB, BagOfEmbeddings


def _rows(pool, n, rng):
    return [{"input_ids": rng.choice(pool, size=int(rng.integers(16, 49))).tolist(),
             "label": int(rng.integers(2))} for _ in range(n)]


def _o105(tmp_path, eval_from_b: bool):
    rng = np.random.default_rng(0)
    a, b = np.split(rng.permutation(VOCAB), 2)
    torch.manual_seed(0)
    model = BagOfEmbeddings()
    with torch.no_grad():  # the model has learned that the two halves of the vocabulary differ
        model.embed.weight[a, 0] += 1.0
        model.embed.weight[b, 0] -= 1.0
    d = save_weights(model, tmp_path / "m")
    tr = write_jsonl(_rows(a, 600, rng), tmp_path / "t.jsonl")
    ev = write_jsonl(_rows(b if eval_from_b else a, 300, rng), tmp_path / "e.jsonl")
    run = open_run(d, RunOptions(train_data=str(tr), eval_data=str(ev), budget="fast",
                                 model_factory="tests.shift_factories:BagOfEmbeddings"))
    res = run_one(run, DistributionShift, {})
    assert res.status == "ran", res.reason
    return res.findings[0]


def test_o105_sees_a_shift_in_embedding_space_only(tmp_path):
    f = _o105(tmp_path, eval_from_b=True)
    cheap, emb = f.evidence["domain_classifier"], f.evidence["embedding_classifier"]
    assert cheap["drift_score"] < 0.25  # the hashed token histogram is blind to it
    assert emb["auc"] > 0.95 and emb["p_value"] < 1e-3
    assert f.severity == "warning" and "input embeddings" in f.message


def test_o105_embedding_test_quiet_without_shift(tmp_path):
    f = _o105(tmp_path, eval_from_b=False)
    assert f.severity == "info"
    assert f.evidence["embedding_classifier"]["drift_score"] < 0.25
