"""Reachability checks beyond the curves: R204 frozen parameters, R205 training-label noise, R206
learning rate, R207 weight spectra, R208 data budget, R209 training duplicates; `degrade compare`.

Each check gets a constructed positive and a negative. Runs are written by the real Recorder or
as HF-style checkpoint folders; models are tiny modules (milliseconds on one thread).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from conftest import one_thread, run_cli
from degrade.checks.reachability.r204_frozen_parameters import FrozenParameters as R204
from degrade.checks.reachability.r205_train_label_noise import TrainLabelNoise as R205
from degrade.checks.reachability.r206_learning_rate import LearningRate as R206
from degrade.checks.reachability.r207_weight_spectra import WeightSpectra as R207, powerlaw_alpha
from degrade.checks.reachability.r208_data_budget import DataBudget as R208
from degrade.checks.reachability.r209_train_duplicates import TrainDuplicates as R209
from degrade.checks.reachability.weights import optimizer_tensor_count
from degrade.check import CheckSkipped
from degrade.compare import compare
from degrade.record.recorder import Recorder
from degrade.run import History, Run, open_run
from degrade.run.data import Examples
from degrade.run.load import ModelHandle
from degrade.run.run import Checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def sev(findings):
    return [f.severity.value for f in findings]


# ---- R204 frozen parameters -------------------------------------------------------------------
def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 3))


def _recorded_run(folder: Path, freeze: bool, lr: float = 1e-2, steps: int = 6) -> Path:
    model = _net()
    if freeze:
        for p in model[0].parameters():
            p.requires_grad = False
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    x, y = torch.randn(32, 8, generator=torch.Generator().manual_seed(1)), torch.arange(32) % 3
    with Recorder(folder, model=model, optimizer=opt, every=1, seed=0) as rec:
        for step in range(1, steps + 1):
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            rec.log(step, loss=loss, lr=lr)
        rec.save_checkpoint(model, steps)
    return folder


def test_r204_frozen_layer_at_init_is_an_error(tmp_path):
    run = open_run(_recorded_run(tmp_path / "run", freeze=True))
    [f] = R204().run(run)
    assert f.severity.value == "error"
    assert set(f.evidence["frozen_tensors"]) == {"0.weight", "0.bias"}
    assert f.evidence["n_zero_update_ratio_tensors"] == 2


def test_r204_all_trainable_is_quiet(tmp_path):
    run = open_run(_recorded_run(tmp_path / "run", freeze=False))
    assert R204().run(run) == []


def _ckpt(folder: Path, step: int, state: dict[str, torch.Tensor]) -> Checkpoint:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    return Checkpoint(step, path)


def _hf_run(tmp_path, first, last) -> Run:
    c1, c2 = _ckpt(tmp_path, 10, first), _ckpt(tmp_path, 20, last)
    return Run(tmp_path, "hf-trainer", history=History(), checkpoints=[c1, c2])


def test_r204_checkpoints_constant_frozen_tensor_is_an_error(tmp_path):
    a = {"enc.w": torch.randn(16, 16), "enc.ln.weight": torch.ones(16), "head.w": torch.randn(4, 16)}
    b = {"enc.w": a["enc.w"].clone(), "enc.ln.weight": torch.ones(16), "head.w": a["head.w"] + 0.1}
    [f] = R204().run(_hf_run(tmp_path, a, b))
    assert f.severity.value == "error" and "enc.ln.weight" in f.evidence["constant_valued_frozen_tensors"]


def test_r204_frozen_pretrained_looking_backbone_is_only_a_warning(tmp_path):
    a = {"enc.w": torch.randn(16, 16), "head.w": torch.randn(4, 16)}
    b = {"enc.w": a["enc.w"].clone(), "head.w": a["head.w"] + 0.1}
    [f] = R204().run(_hf_run(tmp_path, a, b))
    assert f.severity.value == "warning"


def test_r204_skips_without_anything_to_compare(tmp_path):
    with pytest.raises(CheckSkipped):
        R204().run(Run(tmp_path, "hf-trainer", history=History()))


def test_optimizer_count_reads_only_plain_state(tmp_path):
    model = _net()
    opt = torch.optim.AdamW(list(model[2].parameters()), lr=1e-3)
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "optimizer.pt")
    assert optimizer_tensor_count(tmp_path) == 2
    (tmp_path / "optimizer.pt").write_bytes(b"not a torch file")
    assert optimizer_tensor_count(tmp_path) is None


# ---- R206 learning rate -----------------------------------------------------------------------
def _history(losses, lr=1e-3):
    recs = [{"step": i + 1, "loss": float(v), "learning_rate": lr} for i, v in enumerate(losses)]
    return History.from_log_history(recs, {"global_step": len(losses)})


def _layers_run(tmp_path, ratio: float, losses, first_grad: float = 0.1) -> Run:
    native = tmp_path / "degrade"
    native.mkdir()
    with open(native / "layers.jsonl", "w") as f:
        for step in (1, 10, 20, 30, 40):
            f.write(json.dumps({"step": step, "params": {
                "blocks.0.fc.weight": {"grad_norm": first_grad, "weight_norm": 3.0, "update_ratio": ratio},
                "blocks.1.fc.weight": {"grad_norm": 0.1, "weight_norm": 3.0, "update_ratio": ratio}}}) + "\n")
    return Run(tmp_path, "degrade", history=_history(losses), native_dir=native)


def test_r206_tiny_update_ratios_and_flat_loss_is_lr_too_low(tmp_path):
    losses = 2.8 - 0.002 * np.arange(40)  # a straight, slow decline
    [f] = R206().run(_layers_run(tmp_path, 2e-5, losses))
    assert f.severity.value == "error" and "too low" in f.message


def test_r206_healthy_ratios_and_falling_loss_are_quiet(tmp_path):
    losses = 0.1 + 2.7 * np.exp(-np.arange(40) / 8)
    assert R206().run(_layers_run(tmp_path, 1e-3, losses)) == []


def test_r206_vanishing_gradient_in_the_first_layer_is_a_warning(tmp_path):
    losses = 0.1 + 2.7 * np.exp(-np.arange(40) / 8)
    [f] = R206().run(_layers_run(tmp_path, 1e-3, losses, first_grad=1e-6))
    assert f.severity.value == "warning" and "Vanishing" in f.message


def test_r206_slow_shape_without_ratios_is_only_info(tmp_path):
    run = Run(tmp_path, "hf-trainer", history=_history(2.8 - 0.002 * np.arange(40)))
    assert sev(R206().run(run)) == ["info"]


def test_r206_checkpoints_moving_a_lot_with_a_stuck_loss_is_lr_too_high(tmp_path):
    g = torch.Generator().manual_seed(0)
    a = {"h.0.mlp.weight": torch.randn(16, 16, generator=g)}
    b = {"h.0.mlp.weight": torch.randn(16, 16, generator=g)}  # moved by ~1.4x its norm in 10 steps
    run = _hf_run(tmp_path, a, b)
    run.history = _history(3.1 + 0.05 * np.sin(np.arange(30)))
    [f] = R206().run(run)
    assert f.severity.value == "error" and "too high" in f.message
    assert f.evidence["update_ratio_is_lower_bound"] is True


# ---- R207 weight spectra ----------------------------------------------------------------------
def test_powerlaw_fit_recovers_the_tail_exponent():
    rng = np.random.default_rng(0)
    x = (rng.pareto(2.0, 3000) + 1.0)  # pdf ~ x^-(2+1)
    alpha, ks, n = powerlaw_alpha(x)
    assert abs(alpha - 3.0) < 0.3 and ks < 0.05 and n >= 10


def test_r207_skips_small_matrices_and_reads_large_ones(tmp_path):
    small = {"h.0.w": torch.randn(8, 8)}
    run = Run(tmp_path, "hf-trainer", history=History(), checkpoints=[_ckpt(tmp_path, 1, small)])
    with pytest.raises(CheckSkipped, match="eigenvalues"):
        R207().run(run)
    big = {"h.0.w": torch.randn(128, 64), "h.1.w": torch.randn(128, 64)}
    run = Run(tmp_path, "hf-trainer", history=History(), checkpoints=[_ckpt(tmp_path, 2, big)])
    [f] = R207().run(run)
    assert f.severity.value in ("info", "warning")  # never an error on its own
    assert set(f.evidence["layers"]) == {"h.0.w", "h.1.w"}


# ---- R205 label noise, R208 data budget (stub models) -----------------------------------------
class Parity(nn.Module):
    """Predicts the parity of token 1 with confidence ~0.95 (or nothing, when blind)."""

    def __init__(self, blind: bool = False):
        super().__init__()
        self.blind = blind
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        odd = (input_ids[:, 1] % 2).float()
        logits = torch.stack([3 * (1 - odd), 3 * odd], dim=1)
        return torch.zeros_like(logits) if self.blind else logits


class Lookup(nn.Module):
    """Right on the sequences it memorised, wrong elsewhere; a large parameter for the budget."""

    def __init__(self, rows: list[list[int]], labels: list[int], n_params: int = 100_000):
        super().__init__()
        self.table = {tuple(r): y for r, y in zip(rows, labels)}
        self.w = nn.Parameter(torch.zeros(n_params))

    def forward(self, input_ids, attention_mask=None):
        out = torch.zeros(input_ids.shape[0], 2)
        for i, row in enumerate(input_ids.tolist()):
            y = self.table.get(tuple(row))
            out[i, (1 - int(row[1] % 2)) if y is None else y] = 5.0
        return out


def _cls_examples(n, seed, flip=0.0):
    rng = np.random.default_rng(seed)
    ids = [[0] + rng.integers(3, 50, size=5).tolist() for _ in range(n)]
    label = [int(r[1] % 2) for r in ids]
    label = [1 - y if rng.random() < flip else y for y in label]
    return Examples(Path("x.jsonl"), ids, label=label)


def _model_run(tmp_path, module, train, evals, losses) -> Run:
    run = Run(tmp_path, "hf-trainer", history=_history(losses))
    run.__dict__.update({"_model": ModelHandle(module, "sequence-classification", "factory", tmp_path),
                         "train_data": train, "eval_data": evals})
    return run


PLATEAU = 0.65 + 0.01 * np.random.default_rng(0).standard_normal(30)


def test_r205_flipped_labels_are_an_error(tmp_path):
    run = _model_run(tmp_path, Parity(), _cls_examples(600, 0, flip=0.3), _cls_examples(200, 1), PLATEAU)
    [f] = R205().run(run)
    assert f.severity.value == "error"
    assert 0.22 <= f.evidence["noise_rate"] <= 0.38


def test_r205_clean_labels_are_quiet(tmp_path):
    run = _model_run(tmp_path, Parity(), _cls_examples(600, 0), _cls_examples(200, 1), PLATEAU)
    assert R205().run(run) == []


FALLING = np.linspace(1.2, 0.7, 30)  # still learning: no plateau


def test_r205_agreement_with_held_out_labels_needs_no_plateau(tmp_path):
    # the model agrees with clean eval labels (95%) far more than with its flipped training
    # labels (~67%): noisy labels, whether or not the loss has stopped falling
    run = _model_run(tmp_path, Parity(), _cls_examples(600, 0, flip=0.3), _cls_examples(200, 1), FALLING)
    [f] = R205().run(run)
    assert f.severity.value == "error"
    assert 0.22 <= f.evidence["noise_rate_implied_by_agreement"] <= 0.38


def test_r205_clean_labels_are_quiet_while_learning(tmp_path):
    run = _model_run(tmp_path, Parity(), _cls_examples(600, 0), _cls_examples(200, 1), FALLING)
    assert R205().run(run) == []


def test_r205_a_model_that_learned_nothing_says_nothing_about_labels(tmp_path):
    run = _model_run(tmp_path, Parity(blind=True), _cls_examples(600, 0, flip=0.3),
                     _cls_examples(200, 1), PLATEAU)
    assert R205().run(run) == []


def test_r208_memorised_small_train_set_is_an_error(tmp_path):
    train, evals = _cls_examples(40, 0), _cls_examples(200, 1)
    run = _model_run(tmp_path, Lookup(train.input_ids, train.label), train, evals, PLATEAU)
    [f] = R208().run(run)
    assert f.severity.value == "error" and f.evidence["train_accuracy"] == 1.0
    assert f.evidence["chinchilla_reference_tokens_per_param"] == 20.0


def test_r208_does_not_read_published_axes(tmp_path):
    """The ladder, not R208, weighs a published axis (tests/test_axes.py)."""
    train, evals = _cls_examples(40, 0), _cls_examples(200, 1)
    run = _model_run(tmp_path, Lookup(train.input_ids, train.label), train, evals, PLATEAU)
    run.context["axes"] = [{"axis": "length", "code": "P402"}]
    assert sev(R208().run(run)) == ["error"]


def test_r208_small_data_that_generalises_is_quiet(tmp_path):
    run = _model_run(tmp_path, Parity(), _cls_examples(40, 0), _cls_examples(200, 1), PLATEAU)
    assert R208().run(run) == []


# ---- R209 duplicates --------------------------------------------------------------------------
def test_r209_duplicates_and_conflicts_are_a_warning(tmp_path):
    ex = _cls_examples(100, 0)
    dup = Examples(ex.path, ex.input_ids + ex.input_ids[:40], label=ex.label + [1 - y for y in ex.label[:40]])
    run = Run(tmp_path, "hf-trainer")
    run.__dict__["train_data"] = dup
    [f] = R209().run(run)
    assert f.severity.value == "warning" and f.evidence["conflicting_label_examples"] == 80


def test_r209_unique_data_is_quiet(tmp_path):
    run = Run(tmp_path, "hf-trainer")
    run.__dict__["train_data"] = Examples(Path("x"), [[i, i + 1, i + 2] for i in range(50)], label=[0] * 50)
    assert R209().run(run) == []


# ---- degrade compare --------------------------------------------------------------------------
def _eval_run(folder: Path, correct: list[int], lr: float, seed: int) -> Path:
    with Recorder(folder, params={"lr": lr}, seed=seed) as rec:
        for step in (10, 20, 30, 40):
            rec.log(step, loss=1.0 / step, lr=lr)
            rec.log_eval(step, per_example={"loss": [1.0 - c for c in correct],
                                            "correct": correct})
    return folder


def test_compare_paired_difference_beyond_noise(tmp_path):
    rng = np.random.default_rng(0)
    a = (rng.random(800) < 0.6).astype(int).tolist()
    b = [1 if (x or rng.random() < 0.5) else 0 for x in a]  # B fixes half of A's errors
    c = compare(_eval_run(tmp_path / "a", a, 1e-3, 0), _eval_run(tmp_path / "b", b, 3e-3, 1))
    assert set(c.params_diff) >= {"params.lr", "seed"}
    acc = next(m for m in c.metrics if m.name == "accuracy")
    assert acc.paired and acc.n == 800 and acc.reading == "beyond-noise"


def test_compare_tiny_difference_is_within_noise(tmp_path):
    rng = np.random.default_rng(1)
    a = (rng.random(200) < 0.7).astype(int).tolist()
    b = list(a)
    b[0], b[1] = 1 - b[0], 1 - b[1]
    b[2] = 1 - b[2]
    c = compare(_eval_run(tmp_path / "a", a, 1e-3, 0), _eval_run(tmp_path / "b", b, 1e-3, 1))
    acc = next(m for m in c.metrics if m.name == "accuracy")
    assert acc.reading == "within-noise"
    assert list(c.params_diff) == ["seed"]


def test_compare_cli_exit_codes(tmp_path):
    a = _eval_run(tmp_path / "a", [1, 0, 1, 1], 1e-3, 0)
    r = run_cli(["compare", a, a, "--format", "json"])
    doc = json.loads(r.stdout)
    assert r.code == 0 and doc["schema"] == "degrade/compare-v1" and doc["params_diff"] == {}
    r = run_cli(["compare", a, tmp_path / "missing"])
    assert r.code == 2 and "missing" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(["compare", a, a])
    assert r.code == 0 and "No parameter differs" in r.stdout


class NextPlusOne(nn.Module):
    """A causal LM that predicts token (x + 1) % V after token x, with confidence ~0.9."""

    def __init__(self, vocab: int = 10):
        super().__init__()
        self.vocab = vocab
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        return 6.0 * nn.functional.one_hot((input_ids + 1) % self.vocab, self.vocab).float()


def test_confident_learning_on_causal_lm_target_tokens():
    from degrade.probing.confident import confident_joint
    from degrade.probing.targets import target_predictions
    rng = np.random.default_rng(0)
    ids, labels = [], []
    for _ in range(300):
        x = [int(rng.integers(10))]
        for _ in range(5):
            x.append((x[-1] + 1) % 10)
        lab = list(x)
        if rng.random() < 0.3:  # a corrupted target token in 30% of the rows
            lab[3] = (lab[3] + 5) % 10
        ids.append(x)
        labels.append([-100] + lab[1:])
    handle = ModelHandle(NextPlusOne(), "causal-lm", "factory", Path("."))
    cj = confident_joint(target_predictions(handle, Examples(Path("x"), ids, labels=labels)))
    assert cj.n_targets == 300 * 5
    expected = sum(lab[3] != (x[2] + 1) % 10 for x, lab in zip(ids, labels)) / cj.n_targets
    assert abs(cj.noise_rate - expected) < 0.01 and cj.suspect_confidence > 0.8
    assert all(pos == 3 for _, pos, _, _ in cj.suspects)
