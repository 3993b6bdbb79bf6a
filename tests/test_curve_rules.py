"""The curve rules added for real logs, each on synthetic histories over several seeds: a level
shift reads as a rise, WER and perplexity are lower-is-better, a run that went backwards on both
curves is read from a handful of train logs, grad-norm blips after a memorised loss are not
explosions, and the best checkpoint's lead over the last is a finding of its own (R212)."""
from __future__ import annotations

import numpy as np
import pytest

from degrade.checks.reachability.r202_overfitting import Overfitting as R202
from degrade.checks.reachability.r203_instability import TrainingInstability as R203
from degrade.checks.reachability.r212_best_not_last import BestCheckpointNotLast as R212
from degrade.metric_direction import at_ceiling, direction
from test_reachability import make_run, noisy, severities


def test_metric_direction_from_names():
    assert direction("eval_wer") == -1 and direction("cer") == -1 and direction("perplexity") == -1
    assert direction("accuracy") == 1 and direction("rougeL") == 1 and direction("f1") == 1
    assert direction("eval_runtime") is None and direction("samples_per_second") is None
    assert at_ceiling("accuracy", 1.0) and at_ceiling("accuracy", 100.0) and not at_ceiling("accuracy", 0.97)
    assert not at_ceiling("wer", 0.0)


@pytest.mark.parametrize("seed", range(4))
def test_a_jump_that_stays_is_a_rise(seed):
    """Eval loss at its best early, then one step up that stays (+30%, far beyond noise): after
    the minimum the plateau has no trend a rank test could see; the level-shift reading does."""
    s = np.arange(10, 2010, 10)
    train = noisy(0.1 + 2.0 * np.exp(-s / 200), 0.02, seed)
    es = np.arange(100, 2100, 100)
    ev = np.where(es < 200, 1.0, 1.3)
    run = make_run(s, train, evals=(es, noisy(ev, 0.01, seed + 1)))
    (f,) = R202().run(run)
    assert str(f.severity) == "error" and f.evidence["share_after_best_above_3_sigma"] >= 0.8
    assert f.evidence["rise_trend_p"] > 0.01  # the trend test alone would not have read it


@pytest.mark.parametrize("seed", range(4))
def test_wer_that_keeps_improving_demotes_a_loss_rise(seed):
    """The dnabert2 / Whisper pattern: eval loss rises (over-confidence) while WER keeps falling to
    the last eval: a warning, not an error; with WER stalled, the error stands."""
    s = np.arange(10, 4010, 10)
    train = noisy(0.01 + 2.0 * np.exp(-s / 300), 0.02, seed)
    es = np.arange(250, 4250, 250)
    loss = noisy(0.3 + 0.00005 * es, 0.005, seed + 1)
    falling = {int(e): {"wer": 40.0 - 0.004 * e} for e in es}
    stalled = {int(e): {"wer": max(30.0, 40.0 - 0.01 * e)} for e in es}
    (f,) = R202().run(make_run(s, train, evals=(es, loss), eval_metrics=lambda e: falling[e]))
    assert str(f.severity) == "warning" and f.evidence["metric_trend"] == "improving"
    (g,) = R202().run(make_run(s, train, evals=(es, loss), eval_metrics=lambda e: stalled[e]))
    assert str(g.severity) == "error" and g.evidence["metric_trend"] == "stalled"


@pytest.mark.parametrize("seed", range(4))
def test_a_run_that_went_backwards_on_few_train_logs(seed):
    """Five train logs and a best eval at the first of 20: the braj pattern (peak LR far too high)."""
    rng = np.random.default_rng(seed)
    s = np.array([500, 1000, 1500, 2000, 2500])
    train = np.array([1.2, 2.0, 2.2, 2.0, 1.8]) * (1 + 0.02 * rng.standard_normal(5))
    es = np.arange(130, 2730, 130)
    ev = np.r_[2.5, 3.4 + 0.2 * rng.standard_normal(es.size - 1)]
    findings = R203().run(make_run(s, train, evals=(es, ev)))
    worse = [f for f in findings if f.evidence.get("reading") == "got-worse"]
    assert worse and str(worse[0].severity) == "error"


@pytest.mark.parametrize("seed", range(4))
def test_healthy_and_overfitting_runs_never_read_as_going_backwards(seed):
    s = np.arange(10, 3010, 10)
    train = noisy(0.05 + 2.0 * np.exp(-s / 300), 0.02, seed)
    es = np.arange(200, 3200, 200)
    for ev in (0.6 + 2.0 * np.exp(-es / 300), 1.0 + 1.5 * np.exp(-es / 300) + 0.0003 * np.maximum(es - 800, 0)):
        findings = R203().run(make_run(s, train, evals=(es, noisy(ev, 0.01, seed + 1))))
        assert not [f for f in findings if f.evidence.get("reading") == "got-worse"]


@pytest.mark.parametrize("seed", range(4))
def test_grad_norm_blips_after_a_memorised_loss_are_not_explosions(seed):
    """Grad norms fall by orders of magnitude as the loss goes to ~0; a blip x1000 its local
    median that stays below the norm the run trained at is not an explosion; a real one is."""
    rng = np.random.default_rng(seed)
    s = np.arange(10, 3010, 10)
    train = 2.0 * np.exp(-s / 200) + 1e-4
    grad = np.maximum(2.0 * np.exp(-s / 200), 1e-5) * (1 + 0.1 * rng.standard_normal(s.size))
    blip = grad.copy()
    blip[250] = 0.2  # x1e4 its neighbours, far below the run's working norm
    assert not [f for f in R203().run(make_run(s, train, grad=blip)) if "explosion" in f.message]
    boom = grad.copy()
    boom[250] = 50.0
    assert [f for f in R203().run(make_run(s, train, grad=boom)) if "explosion" in f.message]


@pytest.mark.parametrize("seed", range(4))
def test_best_checkpoint_far_better_than_last(seed):
    """WER best at 20% of the run, 10 points worse by the end: R212's error, with the cost in WER
    points; WER falling to the end: nothing."""
    rng = np.random.default_rng(seed)
    s = np.arange(10, 5010, 10)
    train = noisy(0.2 + 2.0 * np.exp(-s / 300), 0.02, seed)
    es = np.arange(250, 5250, 250)
    loss = noisy(0.5 + 0.0001 * es, 0.01, seed + 1)
    bad = {int(e): {"wer": (30.0 if e <= 1000 else 40.0) + rng.normal(0, 0.5)} for e in es}
    good = {int(e): {"wer": 40.0 - 0.002 * e + rng.normal(0, 0.3)} for e in es}
    (f,) = R212().run(make_run(s, train, evals=(es, loss), eval_metrics=lambda e: bad[e]))
    assert str(f.severity) == "error" and 8 < f.evidence["cost"] < 12 and not f.evidence["higher_is_better"]
    assert R212().run(make_run(s, train, evals=(es, loss), eval_metrics=lambda e: good[e])) == []
    assert severities(R212().run(make_run(s, train, evals=(es, loss),
                                           eval_metrics=lambda e: {"accuracy": 0.9}))) == []
