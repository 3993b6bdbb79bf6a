"""The forward engine: chunked reductions equal the direct computation, batches stay within the
logits budget, the shared passes are made once and counted, and a history-only start imports no
torch."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import degrade.engine.batching as batching
from degrade.bench.tasks import copy_rows
from degrade.bench.train import tiny_gpt2, write_jsonl
from degrade.engine.passes import run_pass
from degrade.inputs.data_rows import IGNORE_INDEX
from degrade.run import RunOptions, open_run
from degrade.run.data import load_examples
from degrade.run.load import load_model


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine")
    model = tiny_gpt2(17, n_layer=1, n_embd=32, seed=0)
    model.save_pretrained(d / "model")
    rows = copy_rows(40, seed=4)
    for k, r in enumerate(rows):  # uneven lengths, so batches pad
        n = 6 + k % 9
        r["input_ids"], r["labels"] = r["input_ids"][:n], r["labels"][:n]
    write_jsonl(rows, d / "eval.jsonl")
    return d


def _direct(handle, examples, i):
    """Per-example mean target loss and per-target argmax from one unbatched forward."""
    ids = torch.tensor([examples.input_ids[i]])
    with torch.no_grad():
        logits = handle.logits(ids, torch.ones_like(ids))[0, :-1]
    y = torch.tensor(examples.token_labels(i)[1:])
    keep = y != IGNORE_INDEX
    loss = F.cross_entropy(logits[keep], y[keep], reduction="mean")
    return float(loss), (logits[keep].argmax(-1) == y[keep]).float().mean().item()


def test_chunked_reductions_equal_the_direct_computation(lm, monkeypatch):
    # a logits budget of a few rows and a chunk of two positions: many batches, many chunks
    monkeypatch.setattr(batching, "LOGIT_BYTES", 3 * 14 * 17 * 4)
    monkeypatch.setattr(batching, "CHUNK_BYTES", 2 * 3 * 17 * 4 * 3)
    handle = load_model(lm / "model")
    examples = load_examples(lm / "eval.jsonl")
    idx = np.arange(len(examples))
    got = run_pass(handle, examples, idx).scores
    compared = 0
    for k, i in enumerate(idx):
        if not any(t != IGNORE_INDEX for t in examples.token_labels(int(i))[1:]):
            assert got.n_targets[k] == 0
            continue
        loss, acc = _direct(handle, examples, int(i))
        compared += 1
        assert got.loss[k] == pytest.approx(loss, abs=1e-5)
        assert got.correct[k] == pytest.approx(acc, abs=1e-6)
    assert compared >= 20


def test_batches_hold_at_most_the_logits_budget(lm, monkeypatch):
    budget = 5 * 10 * 17 * 4
    monkeypatch.setattr(batching, "LOGIT_BYTES", budget)
    examples = load_examples(lm / "eval.jsonl")
    seen = []
    for idx, ids, mask, labels in batching.sized_batches(examples, np.arange(len(examples)), 17):
        assert ids.shape[0] == 1 or ids.numel() * 17 * 4 <= budget
        assert bool((labels[mask == 0] == IGNORE_INDEX).all())  # padding is never a target
        seen += idx.tolist()
    assert sorted(seen) == list(range(len(examples)))


def test_probe_length_keeps_its_copies_within_the_budget():
    for vocab in (17, 32_000, 50_257, 256_000):
        for copies in (3, 4, 6):
            n = batching.probe_length(vocab, copies)
            assert n >= 2 and (n == 2 or n * copies * vocab * 4 <= batching.LOGIT_BYTES)


def test_the_shared_eval_pass_is_made_once_and_counted(lm):
    run = open_run(lm / "model", RunOptions(eval_data=str(lm / "eval.jsonl")))
    first = run.engine.eval_pass()
    spent = run.meter.passes()  # one pass over the sample, its padding included
    assert run.engine.eval_pass() is first and run.meter.passes() == spent
    assert 1.0 <= spent < 1.6


def test_a_diagnosis_reports_its_model_compute(lm):
    import degrade
    d = degrade.diagnose(lm / "model", eval_data=lm / "eval.jsonl", budget="fast")
    timing = d.to_dict()["timing"]
    # the shared pass plus the perturbation probes: a couple of eval passes, not dozens
    assert 1.0 <= timing["model_passes"] <= 3.0, timing
    assert sum(c.get("model_passes", 0) for c in d.to_dict()["checks"]) == pytest.approx(timing["model_passes"], rel=0.05)


def test_history_only_diagnose_imports_no_torch(tmp_path):
    log = [{"loss": 2.0 / (1 + s / 10), "learning_rate": 1e-4, "step": s} for s in range(1, 60)]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": log, "global_step": 59}))
    code = ("import sys, degrade.cli\n"
            "try:\n    degrade.cli.main(['diagnose', sys.argv[1], '--format', 'json'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules), file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert p.stderr.strip().splitlines()[-1] == "[]", p.stderr[-2000:]
    assert json.loads(p.stdout)["verdict"]
