"""degrade.record: the native run format written by Recorder (plain loops) and DegradeCallback
(Hugging Face Trainer), read back by degrade.run.open_run. Tiny models built from configs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import degrade
from degrade.record.layer_stats import read_layer_stats, tensor_digest
from degrade.run import RunOptions, open_run
from degrade.run.data import load_examples
from degrade.run.load import load_model

VOCAB, SEQ = 20, 8



class TinyLM(nn.Module):
    """A plain causal LM (not a transformers model): rebuilt through the factory below."""

    def __init__(self, vocab: int = VOCAB, dim: int = 16):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, dim))
        self.head = nn.Linear(dim, vocab)
        self.unused = nn.Linear(3, 3)  # never called: no gradient
        self.frozen = nn.Parameter(torch.ones(4), requires_grad=False)

    def forward(self, input_ids):
        h = self.emb(input_ids)
        return self.head(h + self.mlp(h))


def make_model(params):  # the --model-factory of the plain-loop run
    return TinyLM(params["vocab"], params["dim"])


def _rows(n: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (n, SEQ), generator=g).tolist()


def _write_jsonl(path: Path, rows: list[list[int]], labels: bool = False) -> Path:
    path.write_text("".join(json.dumps({"input_ids": r, **({"labels": r} if labels else {})}) + "\n"
                            for r in rows))
    return path


def _lm_loss(logits, ids, reduction="mean"):
    loss = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1),
                                       reduction=reduction)
    return loss if reduction == "mean" else loss.view(ids.shape[0], -1).mean(1)


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _train_plain(out: Path, tmp: Path, steps: int = 20, every: int = 5):
    torch.manual_seed(0)
    params = {"vocab": VOCAB, "dim": 16, "lr": 1e-2}
    model = make_model(params)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=params["lr"])
    train = _rows(32, 1)
    eval_path = _write_jsonl(tmp / "eval.jsonl", _rows(8, 2))
    ev = torch.tensor(_rows(8, 2))
    with degrade.Recorder(out, params=params, seed=0, task="causal-lm", model=model, optimizer=opt,
                          train_data=train, eval_data=eval_path, every=every,
                          factory="test_recorder:make_model", max_steps=steps) as rec:
        for step in range(1, steps + 1):
            batch = torch.tensor(train[(step % 4) * 8:(step % 4) * 8 + 8])
            loss = _lm_loss(model(batch), batch)
            loss.backward()
            gn = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            rec.log(step, loss=loss, lr=params["lr"], grad_norm=gn, epoch=step / 4)
            if step % 10 == 0:
                with torch.no_grad():
                    logits = model(ev)
                    per = _lm_loss(logits, ev, reduction="none")
                    correct = (logits[:, -2].argmax(-1) == ev[:, -1])
                rec.log_eval(step, per_example={"loss": per, "correct": correct})
                rec.save_checkpoint(model, step)
    return model, initial, train, eval_path


def test_plain_loop_round_trip(tmp_path):
    out = tmp_path / "run"
    model, initial, train, eval_path = _train_plain(out, tmp_path)

    # only OUTPUT_DIR/degrade and OUTPUT_DIR/checkpoint-N are written
    files = _files_under(out)
    assert all(f.startswith("degrade/") or f.startswith("checkpoint-") for f in files), files
    assert {"degrade/manifest.json", "degrade/scalars.jsonl", "degrade/layers.jsonl",
            "degrade/initial_digest.json", "degrade/initial_weights.safetensors",
            "degrade/eval_predictions.jsonl", "checkpoint-10/model.safetensors",
            "checkpoint-20/model.safetensors"} <= set(files)

    run = open_run(out)
    assert run.format == "degrade"
    steps, losses = run.history.series("loss")
    assert steps.tolist() == list(range(1, 21)) and losses[-1] < losses[0]
    assert run.history.series("learning_rate")[1].tolist() == [1e-2] * 20
    assert len(run.history.series("grad_norm")[0]) == 20
    assert run.history.main_eval_set() == ""
    ev_steps, ev_loss = run.history.series("loss", "")
    assert ev_steps.tolist() == [10, 20] and all(math.isfinite(v) for v in ev_loss)
    assert "accuracy" in run.history.eval_metrics("")
    assert run.history.meta["global_step"] == 20

    m = run.manifest
    assert m["format"] == "degrade-run-v1" and m["status"] == "finished" and m["finished"]
    assert m["params"] == {"vocab": VOCAB, "dim": 16, "lr": 1e-2} and m["seed"] == 0
    assert m["max_steps"] == 20 and run.history.meta["max_steps"] == 20
    assert m["task"] == "causal-lm" and m["global_step"] == 20
    assert m["model"]["factory"] == "test_recorder:make_model"
    assert m["model"]["n_params"] == sum(p.numel() for p in model.parameters())
    assert {"torch", "transformers", "numpy", "python", "degrade"} <= set(m["packages"])
    assert set(m["code"]) >= {"git_commit", "git_dirty", "dirty_diff_sha256"}
    # the eval fingerprint is the one degrade computes for --eval-data, so they can be compared
    assert m["data"]["eval"]["fingerprint"] == load_examples(eval_path).fingerprint
    assert m["data"]["eval"]["path"] == str(eval_path.resolve()) and m["data"]["eval"]["n"] == 8
    train_path = _write_jsonl(tmp_path / "train.jsonl", train)
    assert m["data"]["train"]["fingerprint"] == load_examples(train_path).fingerprint
    assert m["data"]["train"]["fingerprint_kind"] == "examples"
    assert run.eval_data is not None and len(run.eval_data) == 8  # found through the manifest path

    # layers.jsonl: step 1 and every 5 steps, per parameter tensor
    stats = read_layer_stats(run.native_dir)
    assert stats.steps.tolist() == [1, 5, 10, 15, 20]
    assert set(stats.params) == {n for n, _ in model.named_parameters()}
    head = stats.params["head.weight"]
    assert (head["grad_norm"] > 0).all() and (head["update_ratio"] > 0).all()
    assert (head["update_ratio"] < 1).all() and (head["weight_norm"] > 0).all()
    assert all(math.isnan(v) for v in stats.params["unused.weight"]["grad_norm"])  # no gradient
    assert (stats.params["frozen"]["update_ratio"] == 0).all()

    # per-example eval predictions
    preds = [json.loads(x) for x in (run.native_dir / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 16 and {p["step"] for p in preds} == {10, 20}
    assert set(preds[0]) == {"step", "index", "loss", "correct"} and preds[7]["index"] == 7

    # initial weights: the snapshot is the untrained model, the digest tells moved from unmoved
    from safetensors.torch import load_file
    snap = load_file(str(run.native_dir / "initial_weights.safetensors"))
    assert all(torch.equal(snap[k], initial[k]) for k in initial)
    digest = json.loads((run.native_dir / "initial_digest.json").read_text())["params"]
    final = dict(model.named_parameters())
    assert digest["unused.weight"]["digest"] == tensor_digest(final["unused.weight"])
    assert digest["head.weight"]["digest"] != tensor_digest(final["head.weight"])

    # the checkpoint loads through the factory the manifest names
    handle = load_model(run.checkpoints[-1].path, factory=m["model"]["factory"], run_config=run.run_config,
                        task_hint=run.task_hint)
    assert all(torch.equal(a, b) for a, b in zip(handle.module.state_dict().values(),
                                                   model.state_dict().values()))
    run2 = open_run(out, RunOptions(model_factory=m["model"]["factory"]))
    assert run2.model_checkpoint.step == 20 and run2.model().task == "causal-lm"
    ids = torch.tensor(_rows(2, 3))
    assert torch.allclose(run2.model().logits(ids), model.eval()(ids))


def test_crashed_run_stays_readable(tmp_path):
    out = tmp_path / "run"
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="boom"):
        with degrade.Recorder(out, model=model, optimizer=opt, every=2) as rec:
            for step in range(1, 6):
                ids = torch.tensor(_rows(4, step))
                _lm_loss(model(ids), ids).backward()
                opt.step()
                opt.zero_grad()
                rec.log(step, loss=float("nan") if step == 5 else 1.0 / step)
            raise RuntimeError("boom")
    # a killed writer may leave half a line: the reader drops it
    with open(out / "degrade" / "scalars.jsonl", "a") as f:
        f.write('{"step": 6, "lo')
    run = open_run(out)
    assert run.manifest["status"] == "failed" and "boom" in run.manifest["error"]
    steps, losses = run.history.series("loss")
    assert steps.tolist() == [1, 2, 3, 4, 5] and math.isnan(losses[-1])
    assert read_layer_stats(run.native_dir).steps.tolist() == [1, 2, 4]


def test_resume_drops_records_after_the_restart_step(tmp_path):
    out = tmp_path / "run"
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def train(rec, steps):
        for step in steps:
            ids = torch.tensor(_rows(4, step))
            _lm_loss(model(ids), ids).backward()
            opt.step()
            opt.zero_grad()
            rec.log(step, loss=1.0 / step)

    with degrade.Recorder(out, params={"a": 1}, model=model, optimizer=opt, every=2,
                          train_data=[[1, 2, 3]]) as rec:
        train(rec, range(1, 9))
    digest = (out / "degrade" / "initial_digest.json").read_text()
    with degrade.Recorder(out, model=model, optimizer=opt, every=2, resume=True, start_step=4) as rec:
        train(rec, range(5, 11))
    run = open_run(out)
    assert run.history.series("loss")[0].tolist() == list(range(1, 11))
    assert read_layer_stats(run.native_dir).steps.tolist() == [1, 2, 4, 6, 8, 10]
    assert (out / "degrade" / "initial_digest.json").read_text() == digest  # the first run's
    assert run.manifest["params"] == {"a": 1} and run.manifest["resumed"][0]["step"] == 4
    assert run.manifest["data"]["train"]["n"] == 1
    # a fresh (non-resumed) recorder in the same folder starts over
    with degrade.Recorder(out, model=model, optimizer=opt, every=2) as rec:
        train(rec, range(1, 3))
    assert open_run(out).history.series("loss")[0].tolist() == [1, 2]


def test_manual_steps_and_named_eval_sets(tmp_path):
    """Without an optimizer the loop marks the step itself; named eval sets use eval_<name>_*."""
    out = tmp_path / "run"
    model = TinyLM()
    with degrade.Recorder(out, model=model, every=1, activations=True) as rec:
        for step in (1, 2):
            ids = torch.tensor(_rows(4, step))
            _lm_loss(model(ids), ids).backward()
            rec.before_optimizer_step(step)
            with torch.no_grad():
                for p in model.parameters():
                    if p.grad is not None:
                        p -= 0.1 * p.grad
            rec.after_optimizer_step(step)
            model.zero_grad()
            rec.log(step, loss=1.0)
        rec.log_eval(2, loss=torch.tensor(2.0), metrics={"accuracy": 0.5}, name="ood")
        rec.log_eval(2, loss=1.5, metrics={"accuracy": 0.75})
    run = open_run(out)
    assert run.history.eval_sets == ["", "ood"]
    assert run.history.series("accuracy", "ood")[1].tolist() == [0.5]
    stats = read_layer_stats(run.native_dir)
    assert stats.steps.tolist() == [1, 2] and (stats.params["emb.weight"]["update_ratio"] > 0).all()
    acts = stats.activations
    assert "mlp.1" in acts and (acts["mlp.1"]["frac_zero"] > 0).all()  # ReLU zeros


def _tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=32,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


def test_plain_loop_with_a_transformers_model(tmp_path):
    out = tmp_path / "run"
    model = _tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with degrade.Recorder(out, params={"lr": 1e-3}, model=model, optimizer=opt, every=2) as rec:
        for step in range(1, 5):
            ids = torch.tensor(_rows(4, step))
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            rec.log(step, loss=loss)
        rec.save_checkpoint(model, 4)
    assert (out / "checkpoint-4" / "config.json").is_file()
    run = open_run(out)
    assert run.manifest["task"] == "causal-lm" and run.manifest["model"]["hf"]
    handle = run.model()  # config.json: no factory needed
    ids = torch.tensor(_rows(2, 9))
    assert torch.allclose(handle.logits(ids), model.eval()(input_ids=ids).logits, atol=1e-5)
    names = set(read_layer_stats(run.native_dir).params)
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names  # tied: once


def test_hf_trainer_callback(tmp_path):
    datasets = pytest.importorskip("datasets")
    from transformers import Trainer, TrainingArguments

    out = tmp_path / "run"
    train_rows, eval_rows = _rows(64, 1), _rows(16, 2)
    train = datasets.Dataset.from_dict({"input_ids": train_rows, "labels": train_rows})
    ev = datasets.Dataset.from_dict({"input_ids": eval_rows, "labels": eval_rows})
    args = TrainingArguments(str(out), report_to="none", use_cpu=True, disable_tqdm=True,
                             max_steps=20, per_device_train_batch_size=8, learning_rate=1e-3,
                             logging_steps=5, eval_strategy="steps", eval_steps=10,
                             save_strategy="steps", save_steps=10, seed=7, max_grad_norm=1.0,
                             load_best_model_at_end=True, metric_for_best_model="eval_loss")
    cb = degrade.DegradeCallback(every=5, params={"model_size": "tiny"})  # eval data: the Trainer's
    trainer = Trainer(model=_tiny_gpt2(), args=args, train_dataset=train, eval_dataset=ev,
                      callbacks=[cb])
    trainer.train()

    # the Trainer's own output is untouched
    assert (out / "checkpoint-10" / "trainer_state.json").is_file()
    assert (out / "checkpoint-20" / "model.safetensors").is_file()
    state = json.loads((out / "checkpoint-20" / "trainer_state.json").read_text())
    assert state["global_step"] == 20

    run = open_run(out)
    assert run.format == "degrade"
    train_steps = [r["step"] for r in state["log_history"] if "loss" in r]
    assert run.history.series("loss")[0].tolist() == train_steps == [5, 10, 15, 20]
    assert len(run.history.series("grad_norm")[1]) == 4
    assert run.history.series("loss", "")[0].tolist() == [10, 20]
    assert run.history.summary.get("train_runtime") is not None

    m = run.manifest
    assert m["writer"] == "degrade.DegradeCallback" and m["status"] == "finished"
    assert m["task"] == "causal-lm" and m["seed"] == 7 and m["global_step"] == 20
    assert m["max_steps"] == 20 and run.history.meta["max_steps"] == 20
    best = Path(state["best_model_checkpoint"]).name
    assert Path(m["best_model_checkpoint"]).name == best
    assert open_run(out, RunOptions(checkpoint="best")).model_checkpoint.path.name == best
    assert m["params"]["learning_rate"] == 1e-3 and m["params"]["model_size"] == "tiny"
    assert m["training_args"]["eval_steps"] == 10 and "hub_token" not in m["training_args"]
    fp = load_examples(_write_jsonl(tmp_path / "eval.jsonl", eval_rows, labels=True)).fingerprint
    assert m["data"]["eval"]["fingerprint"] == fp  # same hash as degrade's --eval-data reader
    assert m["data"]["train"]["n"] == 64 and m["data"]["train"]["fingerprint_kind"] == "examples"

    stats = read_layer_stats(run.native_dir)
    assert stats.steps.tolist() == [1, 5, 10, 15, 20]
    attn = stats.params["transformer.h.0.attn.c_attn.weight"]
    assert (attn["grad_norm"] > 0).all() and (attn["update_ratio"] > 0).all()
    assert (run.native_dir / "initial_weights.safetensors").is_file()
    assert run.model_checkpoint.step == 20 and run.model().task == "causal-lm"

    # an evaluation after training still lands in the history
    trainer.evaluate()
    assert open_run(out).history.series("loss", "")[0].tolist() == [10, 20, 20]


def test_accelerator_scalars_are_read_in_batches(tmp_path, monkeypatch):
    """Device tensors are not read one per step (a sync each): they wait, in order, and are read
    together. CPU tensors stand in for CUDA ones here."""
    from degrade.record import recorder as recorder_mod
    monkeypatch.setattr(recorder_mod, "_on_device", lambda v: isinstance(v, torch.Tensor))
    out = tmp_path / "run"
    scalars = out / "degrade" / "scalars.jsonl"
    with degrade.Recorder(out) as rec:
        for step in range(1, 6):
            rec.log(step, loss=torch.tensor(1.0 / step), lr=0.1, grad_norm=torch.tensor(2.0))
        assert not scalars.exists() or scalars.read_text() == ""  # waiting, not lost
        rec.log_eval(5, loss=torch.tensor(0.5))  # an evaluation writes everything waiting
        assert len(scalars.read_text().splitlines()) == 6
        for step in range(6, 6 + recorder_mod._ScalarLog.DEFER_MAX):
            rec.log(step, loss=torch.tensor(1.0))
        assert len(scalars.read_text().splitlines()) == 6 + recorder_mod._ScalarLog.DEFER_MAX
        rec.log(99, loss=torch.tensor(1.0))
    rows = [json.loads(x) for x in scalars.read_text().splitlines()]
    assert [r["step"] for r in rows][:7] == [1, 2, 3, 4, 5, 5, 6] and rows[-1]["step"] == 99
    assert rows[1] == {"step": 2, "loss": 0.5, "learning_rate": 0.1, "grad_norm": 2.0}


def test_misuse_is_refused_or_reported(tmp_path):
    model = TinyLM()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with degrade.Recorder(tmp_path / "a", model=model, optimizer=opt) as rec:
        with pytest.raises(RuntimeError, match="twice"):
            rec.before_optimizer_step(1)  # the hooks already do it
    with pytest.raises(ValueError, match="module:callable"):
        degrade.Recorder(tmp_path / "b", factory="no_colon")
    with pytest.raises(ValueError, match="task"):
        degrade.Recorder(tmp_path / "c", task="translation")
    with pytest.warns(RuntimeWarning, match="no per-layer statistics"):
        with degrade.Recorder(tmp_path / "d", model=model, every=2) as rec:  # no optimizer
            for step in range(1, 4):
                rec.log(step, loss=1.0)
