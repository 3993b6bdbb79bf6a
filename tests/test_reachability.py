"""History-based reachability checks: R201 loss-not-converged, R202 overfitting, R203 instability.

Synthetic runs are built from HF-Trainer-shaped log_history records; the six real Trainer logs in
/work/shared/real-runs/ are read as a careful engineer read them (see docs/check-notes/reachability.md).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from degrade.check import Check
from degrade.checks.reachability import curves as C
from degrade.checks.reachability.r201_not_converged import LossNotConverged as R201
from degrade.checks.reachability.r202_overfitting import Overfitting as R202
from degrade.checks.reachability.r203_instability import TrainingInstability as R203
from degrade.errors import InputError
from degrade.option import declared
from degrade.run import History, Run, open_run
from degrade.suite import run_one

REAL = Path("/work/shared/real-runs")


# ---- building synthetic runs ------------------------------------------------------------------
def make_run(steps, train, *, evals=None, lr=None, grad=None, epochs=None, max_steps=None,
             extra_eval=None, eval_metrics=None, tmp="/tmp/degrade-synthetic-run") -> Run:
    """A Run whose history looks like a Trainer's log_history.

    evals: (steps, losses) of the default eval set; extra_eval: {name: (steps, losses)};
    eval_metrics: step -> {metric: value} logged with the default set's loss.
    """
    steps = [int(s) for s in steps]
    last = steps[-1]
    records = []
    for i, s in enumerate(steps):
        rec = {"step": s, "loss": float(train[i]),
               "epoch": float(epochs[i]) if epochs is not None else s / last}
        rec["learning_rate"] = float(lr[i]) if lr is not None else 1e-4
        if grad is not None:
            rec["grad_norm"] = float(grad[i])
        records.append(rec)
    if evals is not None:
        for s, e in zip(*evals):
            records.append({"step": int(s), "eval_loss": float(e), "eval_runtime": 1.0,
                            "epoch": s / last, **{f"eval_{k}": v for k, v in
                                                  (eval_metrics(int(s)) if eval_metrics else {}).items()}})
    for name, (es, ev) in (extra_eval or {}).items():
        for s, e in zip(es, ev):
            records.append({"step": int(s), f"eval_{name}_loss": float(e), "epoch": s / last})
    records.sort(key=lambda r: r["step"])
    records.append({"step": last, "train_runtime": 10.0, "train_loss": float(np.mean(train)),
                    "epoch": 1.0})
    meta = {"global_step": last, "max_steps": max_steps or last}
    return Run(Path(tmp), "hf-trainer", history=History.from_log_history(records, meta))


def noisy(values, rel, seed):
    rng = np.random.default_rng(seed)
    return np.asarray(values) * (1 + rel * rng.standard_normal(len(values)))


def severities(findings):
    return sorted(str(f.severity) for f in findings)


def errors(findings):
    return [f for f in findings if str(f.severity) == "error" and f.confidence >= 0.5]


def converged_run(seed=0, with_eval=True):
    s = np.arange(10, 3010, 10)
    train = noisy(0.5 + 2.0 * np.exp(-s / 300), 0.02, seed)
    ev = None
    if with_eval:
        es = np.arange(200, 3200, 200)
        ev = (es, noisy(0.6 + 2.0 * np.exp(-es / 300), 0.005, seed + 1))
    return make_run(s, train, evals=ev)


def cut_run(with_eval=True, seed=0):
    s = np.arange(10, 1010, 10)
    train = noisy(0.5 + 2.0 * np.exp(-s / 2000), 0.01, seed)
    ev = None
    if with_eval:
        es = np.arange(100, 1100, 100)
        ev = (es, noisy(0.6 + 2.0 * np.exp(-es / 2000), 0.003, seed + 1))
    return make_run(s, train, evals=ev)


def u_shaped_run(seed=0, eval_metrics=None):
    s = np.arange(10, 4010, 10)
    train = noisy(0.05 + 2.0 * np.exp(-s / 600), 0.02, seed)
    es = np.arange(250, 4250, 250)
    ev = 1.0 + 1.5 * np.exp(-es / 300) + 0.0002 * np.maximum(es - 1000, 0)
    return make_run(s, train, evals=(es, noisy(ev, 0.01, seed + 1)), eval_metrics=eval_metrics)


# ---- the contract ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [R201, R202, R203])
def test_contract(cls):
    assert issubclass(cls, Check)
    assert cls.code.startswith("R2") and cls.layer.value == "reachability"
    doc = cls.doc()
    for section in ("What it detects", "Why it matters", "Evidence used", "Fix"):
        assert section in doc, f"{cls.code} docstring lacks {section}"
    if isinstance(cls.options, dict):  # a plain dict of defaults: documented in the docstring
        assert "Options" in doc, f"{cls.code} docstring lacks Options"
        for opt in cls.options:
            assert opt in doc, f"{cls.code} option {opt} is undocumented"
    else:  # Option declarations: documented by their help and source (tests/test_check_docs.py)
        for opt in declared(cls.options):
            assert opt.help and opt.source, f"{cls.code} option {opt.name} is undocumented"


def test_registry_finds_the_checks():
    from degrade.registry import all_checks
    codes = {c.code for c in all_checks()}
    assert {"R201", "R202", "R203"} <= codes


# ---- curve helpers -----------------------------------------------------------------------------
def test_power_law_fit_recovers_a_clean_curve():
    s = np.arange(100, 2001, 50, dtype=float)
    v = 0.7 + 3.0 * s ** -0.5
    f = C.fit_saturating(s, v, "power", 2000)
    assert abs(f.floor - 0.7) < 0.02 and abs(f.shape - 0.5) < 0.05
    p = C.project_gain(s, v, 100, 5)
    true_gain = 3.0 * (2000 ** -0.5 - 4000 ** -0.5)
    assert p.gain_low <= true_gain * 1.05 and p.gain_high >= true_gain * 0.95


def test_noise_sigma_ignores_trend():
    s = np.arange(200, dtype=float)
    v = 5 - 0.01 * s + 0.1 * np.random.default_rng(0).standard_normal(200)
    assert 0.07 < C.noise_sigma(v) < 0.13


# ---- R201 --------------------------------------------------------------------------------------
def test_converged_curve_is_quiet():
    run = converged_run()
    assert R201().run(run) == []
    assert R202().run(run) == []
    assert R203().run(run) == []


@pytest.mark.parametrize("seed", range(12))
def test_converged_curves_never_alarm(seed):
    for with_eval in (True, False):
        run = converged_run(seed, with_eval)
        for cls in (R201, R202, R203):
            assert not errors(cls().run(run)), (cls.code, seed, with_eval)
            assert "warning" not in severities(cls().run(run)), (cls.code, seed, with_eval)


def test_curve_cut_while_falling_fast_is_an_error():
    found = R201().run(cut_run())
    assert severities(found) == ["error"]
    f = found[0]
    assert f.confidence >= 0.7  # decided on the eval curve
    ev = f.evidence
    assert ev["curve"] == "eval"
    assert ev["projected_gain_2x"] > 0.2
    lo, hi = ev["projected_gain_2x_range"]
    assert lo <= ev["projected_gain_2x"] <= hi
    assert f.fix and "1.5x" in f.next_experiment
    json.dumps(f.to_dict())


def test_curve_cut_while_falling_train_only_is_an_error_with_less_confidence():
    found = R201().run(cut_run(with_eval=False))
    assert severities(found) == ["error"]
    assert found[0].evidence["curve"] == "train"
    assert found[0].confidence < R201().run(cut_run())[0].confidence
    assert "held-out" in found[0].next_experiment


def test_near_zero_converged_loss_is_not_flagged():
    # Still falling *relatively* at the end (0.0018 -> ~0.0014 from doubling: >20% of the
    # current loss) but nothing against the 3.0 already dropped.
    s = np.arange(10, 5010, 10)
    clean = 0.001 + 3.0 * np.exp(-s / 150) + 0.004 * (s / 1000.0) ** -1
    run = make_run(s, noisy(clean, 0.05, 3))
    found = R201().run(run)
    assert not errors(found) and "warning" not in severities(found)
    es = np.arange(500, 5500, 500)
    run = make_run(s, noisy(clean, 0.05, 3), evals=(es, 0.002 + 0.004 * (es / 1000.0) ** -1))
    found = R201().run(run)
    assert not errors(found) and "warning" not in severities(found)


def test_warmup_is_left_out_of_the_fit():
    s = np.arange(10, 3010, 10)
    lr = np.where(s < 600, 1e-4 * s / 600, 1e-4)
    # During warmup the loss barely moves, then decays to its floor.
    train = np.where(s < 600, 2.5 - 0.1 * s / 600, 0.5 + 1.9 * np.exp(-(s - 600) / 250))
    run = make_run(s, noisy(train, 0.02, 5), lr=lr)
    assert 580 <= C.fit_region_start(run.history, 0.1) <= 600  # the warmup, not 10% (300)
    found = R201().run(run)
    assert not errors(found)


def test_eval_rising_is_not_claimed_as_not_converged():
    found = R201().run(u_shaped_run())
    assert severities(found) == ["info"]
    assert "R202" in found[0].message


def test_unfinished_schedule_with_falling_loss_is_an_error():
    s = np.arange(10, 1010, 10)
    train = noisy(0.5 + 0.4 * (s / 100.0) ** -0.3, 0.02, 7)
    lr = np.full(s.size, 5e-5)
    found = R201().run(make_run(s, train, lr=lr, max_steps=3000))
    assert severities(found) == ["error"]
    assert found[0].evidence["schedule_done"] == pytest.approx(1000 / 3000, rel=1e-3)


def test_noisy_plateau_is_quiet():
    s = np.arange(10, 2010, 10)
    train = np.concatenate([np.linspace(3, 1, 20), noisy(np.full(180, 1.0), 0.05, 11)])
    es = np.arange(200, 2200, 200)
    run = make_run(s, train, evals=(es, noisy(np.full(es.size, 1.2), 0.02, 12)))
    for cls in (R201, R202, R203):
        assert cls().run(run) == [], cls.code


def test_option_override_raises_the_bar():
    assert severities(R201(min_gain_fraction=0.9, min_drop_fraction=0.99).run(cut_run())) != ["error"]


# ---- R202 --------------------------------------------------------------------------------------
def test_u_shaped_eval_with_falling_train_is_overfitting():
    found = R202().run(u_shaped_run())
    assert severities(found) == ["error"]
    ev = found[0].evidence
    assert ev["best_step"] < 0.5 * ev["last_step"]
    assert ev["rise"] > 0.1 and ev["train_trend"] == "falling"
    assert ev["train_eval_gap_at_end"] > 1.0
    json.dumps(found[0].to_dict())


def test_overfitting_does_not_read_published_axes():
    """No check demotes itself on another check's output: the ladder weighs axes (test_axes.py)."""
    run = u_shaped_run()
    run.context["axes"] = [{"axis": "position", "code": "P402", "detail": "loss grows with position"}]
    assert severities(R202().run(run)) == ["error"]


def test_eval_and_train_rising_together_is_not_overfitting():
    s = np.arange(10, 2010, 10)
    train = 0.5 + 2.0 * np.exp(-s / 200) + 0.0008 * np.maximum(s - 800, 0)
    es = np.arange(200, 2200, 200)
    ev = 0.7 + 2.0 * np.exp(-es / 200) + 0.0008 * np.maximum(es - 800, 0)
    found = R202().run(make_run(s, noisy(train, 0.01, 1), evals=(es, noisy(ev, 0.005, 2))))
    assert not errors(found)


def test_loss_rise_without_accuracy_loss_is_a_warning():
    run = u_shaped_run(eval_metrics=lambda step: {"accuracy": 0.8 + 0.1 * step / 4000})  # still improving
    found = R202().run(run)
    assert severities(found) == ["warning"]
    assert "over-confidence" in found[0].message


def test_r202_skips_without_eval_through_the_suite():
    res = run_one(converged_run(with_eval=False), R202, {})
    assert res.status == "skipped" and "no evaluation" in res.reason


def test_secondary_eval_set_overfitting_is_a_warning():
    base = converged_run()
    s, v = base.history.series("loss")
    es = np.arange(250, 3250, 250)
    ev_main = noisy(0.6 + 2.0 * np.exp(-es / 300), 0.005, 1)
    ev_ood = noisy(1.0 + 1.5 * np.exp(-es / 300) + 0.0003 * np.maximum(es - 800, 0), 0.01, 2)
    run = make_run(s, v, evals=(es, ev_main), extra_eval={"ood": (es, ev_ood)})
    found = R202().run(run)
    assert severities(found) == ["warning"] and "ood" in found[0].message
    assert found[0].fix and found[0].next_experiment


# ---- R203 --------------------------------------------------------------------------------------
def test_nan_loss_is_an_error():
    s = np.arange(10, 1010, 10)
    train = list(0.5 + 2.0 * np.exp(-s / 200))
    train[60:] = [math.nan] * 40
    found = R203().run(make_run(s, train))
    assert "error" in severities(found)
    nan = next(f for f in found if f.severity == "error")
    assert nan.evidence["first_step"] == 610 and nan.evidence["non_finite_points"] == 40
    json.dumps(nan.to_dict())


def test_single_recovered_spike_is_a_warning_only():
    s = np.arange(10, 2010, 10)
    train = noisy(0.5 + 2.0 * np.exp(-s / 300), 0.02, 4)
    train[120] = 3.0  # one spike at step 1210, back to normal right after
    found = R203().run(make_run(s, train))
    assert severities(found) == ["warning"]
    assert found[0].evidence["spikes"][0]["step"] == 1210
    assert found[0].evidence["spikes"][0]["recovered_after_points"] == 1


def test_divergence_is_an_error():
    s = np.arange(10, 2010, 10)
    train = np.where(s < 1000, 0.5 + 2.0 * np.exp(-s / 200), 0.5 + 2.0 * np.exp(-5) + 0.003 * (s - 1000))
    found = R203().run(make_run(s, noisy(train, 0.01, 6)))
    assert severities(found) == ["error"]
    assert found[0].evidence["end_over_min"] >= 2


def test_grad_norm_nan_with_finite_loss_is_only_a_warning():
    s = np.arange(10, 1010, 10)
    grad = np.full(s.size, 1.0)
    grad[[3, 50]] = math.inf
    found = R203().run(make_run(s, noisy(0.5 + 2.0 * np.exp(-s / 200), 0.02, 8), grad=grad))
    assert severities(found) == ["warning"]


def test_grad_norm_explosion_is_a_warning():
    s = np.arange(10, 2010, 10)
    grad = noisy(np.full(s.size, 1.0), 0.1, 9)
    grad[150] = 40.0
    found = R203().run(make_run(s, noisy(0.5 + 2.0 * np.exp(-s / 300), 0.02, 9), grad=grad))
    assert severities(found) == ["warning"]
    assert found[0].evidence["explosions"][0]["step"] == 1510


def test_few_points_skip_through_the_suite():
    run = make_run([100, 200, 300], [2.0, 1.5, 1.2])
    for cls in (R201, R203):
        res = run_one(run, cls, {})
        assert res.status == "skipped", cls.code
        assert "training-loss point" in res.reason


def test_suite_runs_them_on_synthetic_runs():
    for cls in (R201, R202, R203):
        res = run_one(converged_run(), cls, {})
        assert res.status == "ran" and res.findings == [], cls.code
    res = run_one(cut_run(), R201, {})
    assert res.status == "ran" and severities(res.findings) == ["error"]
    res = run_one(u_shaped_run(), R202, {})
    assert res.status == "ran" and severities(res.findings) == ["error"]


# ---- the real Trainer logs ---------------------------------------------------------------------
def real(name):
    path = REAL / name
    if not path.is_dir():
        pytest.skip(f"{path} not available")
    return open_run(path)


def read(run):
    return {cls.code: run_one(run, cls, {}) for cls in (R201, R202, R203)}


def test_real_lfs_pointer_is_bad_input():
    if not (REAL / "justin-donnelly-spam-detection").is_dir():
        pytest.skip("real runs not available")
    with pytest.raises(InputError, match="LFS"):
        open_run(REAL / "justin-donnelly-spam-detection")


def test_real_aguleon_lora_agnews_is_clean():
    # LoRA RoBERTa on AG News, 1200 steps, linear decay to 0. Eval loss flat at ~0.290 since step
    # 800 (min 0.2896 at 900): converged under its schedule, no overfitting, no instability. The
    # train loss's last drop (0.263 -> 0.236 at LR ~0) is noise; the eval curve decides.
    r = read(real("aguleon-lora-roberta-agnews"))
    assert all(res.status == "ran" and res.findings == [] for res in r.values())


def test_real_aigoncharov_overfits():
    # 30 epochs at constant LR: train loss 1.11 -> 0.055 while every eval set's loss bottoms at
    # the first eval (step 401) and more than doubles; g0 accuracy 0.68 -> 0.59.
    r = read(real("aigoncharov-trainer_state_viz"))
    f = r["R202"].findings
    assert severities(f) == ["error"] and f[0].confidence >= 0.8
    assert f[0].evidence["best_step"] == 401 and f[0].evidence["metric_trend"] == "worsened"
    assert severities(r["R201"].findings) == ["info"]  # eval rising: not under-training
    assert r["R203"].status == "ran" and not r["R203"].findings


def test_real_dheena_tinyllama_is_clean():
    # 2 epochs, cosine to ~0: eval loss 1.62 -> 1.1219, its last three evals within 0.0012:
    # plateaued under the schedule; best checkpoint = the last one; grad norm 1-2.7, no spikes.
    r = read(real("dheena731-tinyllama-finetune"))
    assert all(res.status == "ran" and res.findings == [] for res in r.values())


def test_real_sygoat_mistral_is_unfinished():
    # checkpoint-3000 of max_steps 8660 (35%), LR still 83% of peak, no eval logged. Train loss
    # drops 0.09 where epoch 2 begins (memorisation) and keeps falling slowly inside epoch 2.
    r = read(real("sygoat-mistral-translator"))
    f = r["R201"].findings
    assert severities(f) == ["error"] and 0.5 <= f[0].confidence <= 0.7
    assert f[0].evidence["curve"] == "train" and f[0].evidence["schedule_done"] < 0.4
    assert f[0].evidence["train_epoch_boundary_drops"][0]["epoch"] == 2
    assert r["R202"].status == "skipped" and "no evaluation" in r["R202"].reason
    assert r["R203"].status == "ran" and not r["R203"].findings


def test_real_rnpcs_bart_single_entry_is_skipped():
    r = read(real("rnpcs-bart-samsum"))
    assert r["R201"].status == "skipped" and "1 training-loss point" in r["R201"].reason
    assert r["R202"].status == "skipped" and "no evaluation" in r["R202"].reason
    assert r["R203"].status == "skipped" and "1 finite training-loss point" in r["R203"].reason


def _sigmoid_drop(s, centre):
    """A loss leaving its plateau at ln 2 (a binary classifier at chance), falling by 0.5 around `centre`."""
    return math.log(2) - 0.5 / (1 + np.exp(-(s - centre) / 80))


@pytest.mark.parametrize("seed", range(4))
def test_a_descent_cut_while_accelerating_is_an_error(seed):
    """Stopped as the loss leaves its plateau: the saturating fits understate the gain, so the
    strength rule alone would not fire; the accelerating-descent rule does."""
    s = np.arange(10, 1010, 10)
    es = np.arange(50, 1050, 50)
    run = make_run(s, noisy(_sigmoid_drop(s, 1250), 0.002, seed),
                   evals=(es, noisy(_sigmoid_drop(es, 1250), 0.001, seed + 1)))
    found = errors(R201().run(run))
    assert found and found[0].evidence["strength"] < 0.5  # below even the warning bar
    assert found[0].evidence["accelerating_descent"]["slope_last_half_per_1k"] < 0
    assert "middle of its descent" in found[0].message


@pytest.mark.parametrize("seed", range(4))
def test_a_finished_plateau_then_drop_is_not_accelerating(seed):
    s = np.arange(10, 4010, 10)
    es = np.arange(100, 4100, 100)
    run = make_run(s, noisy(_sigmoid_drop(s, 1500), 0.002, seed),
                   evals=(es, noisy(_sigmoid_drop(es, 1500), 0.001, seed + 1)))
    assert not any("accelerating_descent" in f.evidence for f in R201().run(run))
