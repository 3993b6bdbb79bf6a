"""degrade.Recorder: writes the native run format from a plain PyTorch training loop.

    import degrade
    with degrade.Recorder("runs/exp1", params=cfg, seed=0, model=model, optimizer=opt,
                          train_data=train_rows, eval_data="data/eval.jsonl",
                          factory="mymodels:build") as rec:
        for step in range(1, max_steps + 1):          # step = optimizer steps done, from 1
            loss = model(batch).loss
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(); opt.zero_grad()               # per-layer stats are taken inside opt.step()
            rec.log(step, loss=loss, lr=sched.get_last_lr()[0], grad_norm=gn)
            if step % 500 == 0:
                rec.log_eval(step, loss=ev_loss, metrics={"accuracy": acc},
                             per_example={"loss": losses, "correct": correct})
                rec.save_checkpoint(model, step)

Per-layer statistics need the gradients of a step (after clipping) and the weights on both sides of
optimizer.step(); the Recorder gets both from hooks on the optimizer it is given, so the loop has
nothing to call at the right moment and nothing to get wrong. Loops that use an optimizer wrapper
without torch's step hooks call before_optimizer_step() / after_optimizer_step() themselves.

Everything is written under OUTPUT_DIR/degrade/ (and OUTPUT_DIR/checkpoint-N/ by save_checkpoint);
see docs/recording.md for the format.
"""
from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from degrade.record import layer_stats as ls
from degrade.record.manifest import (FORMAT, code_info, describe_data, environment_info, infer_task,
                                     is_hf_model, json_safe, model_info, now, package_versions,
                                     write_json_atomic)

SCALARS, LAYERS, PREDICTIONS = "scalars.jsonl", "layers.jsonl", "eval_predictions.jsonl"
DIGEST, INITIAL_WEIGHTS, MANIFEST = "initial_digest.json", "initial_weights.safetensors", "manifest.json"
TASKS = ("causal-lm", "sequence-classification")
SNAPSHOT_MAX_PARAMS = 50_000_000


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode  # built once: json.dumps(...) builds one per call


class _Jsonl:
    """An append-only JSON-lines file, line-buffered: a crashed run leaves every finished line."""

    def __init__(self, path: Path):
        self.path = path
        self._f = None

    def write(self, obj: Mapping[str, Any]) -> None:
        if self._f is None:
            self._f = open(self.path, "a", encoding="utf-8", buffering=1)
        self._f.write(_ENCODE(obj) + "\n")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _on_device(v: torch.Tensor) -> bool:
    """A one-element tensor on an accelerator: reading it now would wait for the device."""
    return not v.is_cpu and v.numel() == 1


def _host_values(tensors: list[torch.Tensor]) -> list[float]:
    """One-element tensors to floats: one transfer per device."""
    out: list[float] = [0.0] * len(tensors)
    by_dev: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dev.setdefault(t.device, []).append(i)
    for idx in by_dev.values():
        vals = torch.stack([tensors[i].detach().reshape(()).double() for i in idx]).tolist()
        for i, v in zip(idx, vals):
            out[i] = v if tensors[i].is_floating_point() else int(v)
    return out


class _ScalarLog:
    """scalars.jsonl. A record is written (and flushed) at once, except that values still on an
    accelerator (a CUDA loss, clip_grad_norm_'s result) are not read one by one, which would stall
    the device every step: records holding them wait, DEFER_MAX at most, and are read together
    with one transfer. close(), log_eval() and save_checkpoint() write everything waiting."""

    DEFER_MAX = 16

    def __init__(self, path: Path):
        self.out = _Jsonl(path)
        self.queue: list[tuple[dict, list[str]]] = []

    def write(self, rec: dict[str, Any]) -> None:
        later = []
        for k, v in rec.items():
            if type(v) is float or type(v) is int:
                continue
            if isinstance(v, torch.Tensor) and _on_device(v):
                later.append(k)
                rec[k] = v.detach()
            else:
                rec[k] = _value(v)
        if later or self.queue:
            self.queue.append((rec, later))
            if len(self.queue) >= self.DEFER_MAX:
                self.flush()
        else:
            self.out.write(rec)

    def flush(self) -> None:
        if not self.queue:
            return
        tensors = [rec[k] for rec, later in self.queue for k in later]
        values = iter(_host_values(tensors)) if tensors else iter(())
        for rec, later in self.queue:
            for k in later:
                rec[k] = next(values)
            self.out.write(rec)
        self.queue.clear()

    def close(self) -> None:
        self.flush()
        self.out.close()


def _value(v: Any) -> Any:
    """A logged value as plain JSON (tensors and numpy scalars to Python numbers)."""
    if isinstance(v, bool) or v is None or isinstance(v, (int, float, str)):
        return v
    if isinstance(v, torch.Tensor):
        return v.item() if v.numel() == 1 else v.detach().cpu().tolist()
    if hasattr(v, "item") and callable(v.item) and getattr(v, "size", 1) == 1:
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def _column(v: Any) -> list:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().tolist()
    if hasattr(v, "tolist"):
        return v.tolist()
    return [_value(x) for x in v]


class Recorder:
    """Records a training run in degrade's native format (OUTPUT_DIR/degrade/).

    Args:
        output_dir: the run's output folder; the Recorder writes OUTPUT_DIR/degrade/ and, through
            save_checkpoint, OUTPUT_DIR/checkpoint-N/. Nothing else.
        params: the hyperparameters/config that define the run (any JSON-able mapping, dataclass,
            argparse Namespace or config with to_dict()). Passed to `factory` when degrade rebuilds
            the model, so put the model's constructor arguments there.
        seed: the seed the run was started with.
        task: "causal-lm", "sequence-classification" or None (inferred from a HF model's class).
        model: the model; watched at once (initial-weights digest and snapshot) when given.
        optimizer: hooked (torch step hooks) to record per-layer statistics every `every` steps.
        train_data, eval_data: a path (.jsonl/.json/.csv/.parquet or a save_to_disk folder), a list
            of token lists or of rows with input_ids, a torch/HF Dataset or a DataLoader: recorded
            as a path (when given) and a content fingerprint.
        every: per-layer statistics at optimizer step 1 and every `every` steps (0: never).
        factory: "module:callable" that rebuilds a plain nn.Module from `params` (degrade's
            --model-factory); not needed for Hugging Face models (config.json is saved).
        activations: also record activation statistics of leaf modules on recorded steps.
        snapshot_max_params: keep the full initial weights (initial_weights.safetensors) only for
            models up to this size; a per-parameter digest is always kept.
        resume: continue a run recorded in the same folder: keep its manifest and initial weights,
            drop records after `start_step`, append.
        start_step: optimizer steps already done (for resume).
        max_steps: the planned number of optimizer steps, when known (tells a run that stopped
            early from one that finished its schedule).
    """

    writer = "degrade.Recorder"

    def __init__(self, output_dir: str | os.PathLike, params: Any = None, seed: int | None = None,
                 task: str | None = None, model: nn.Module | None = None, train_data: Any = None,
                 eval_data: Any = None, every: int = 50, factory: str | None = None, *,
                 optimizer: torch.optim.Optimizer | None = None, activations: bool = False,
                 snapshot_max_params: int = SNAPSHOT_MAX_PARAMS, resume: bool = False,
                 start_step: int = 0, max_steps: int | None = None):
        if task is not None and task not in TASKS:
            raise ValueError(f"task must be one of {TASKS} or None, not {task!r}")
        if factory is not None and (not isinstance(factory, str) or ":" not in factory):
            raise ValueError(f"factory must look like 'module:callable', not {factory!r}")
        self.output_dir = Path(output_dir)
        self.dir = self.output_dir / "degrade"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.every = int(every)
        self.factory = factory
        self.activations = bool(activations)
        self.snapshot_max_params = int(snapshot_max_params)
        self.model: nn.Module | None = None
        self._collector: ls.LayerStatsCollector | None = None
        self._hooks: list[Any] = []
        self._done = int(start_step)  # optimizer steps done
        self.global_step = int(start_step)
        self._errors: list[str] = []
        self._layer_records = 0
        self._files: dict[str, Any] = {n: _Jsonl(self.dir / n) for n in (LAYERS, PREDICTIONS)}
        self._files[SCALARS] = _ScalarLog(self.dir / SCALARS)

        previous = self._read_manifest() if resume else None
        if resume:
            for name in self._files:
                _truncate_after(self.dir / name, self._done)
        else:
            for name in (SCALARS, LAYERS, PREDICTIONS, DIGEST, INITIAL_WEIGHTS):
                (self.dir / name).unlink(missing_ok=True)  # a fresh run in a reused folder
        self.manifest: dict[str, Any] = {
            "format": FORMAT, "writer": self.writer, "task": task, "params": json_safe(params or {}),
            "seed": seed, "torch_initial_seed": int(torch.initial_seed()),
            "code": code_info(), "packages": package_versions(), "environment": environment_info(),
            "data": {"train": None, "eval": None}, "model": None,
            "global_step": self._done, "max_steps": max_steps,
            "created": now(), "finished": None, "status": "running",
            "recording": {"every": self.every, "update_sample_max": ls.SAMPLE_MAX,
                          "activations": self.activations, "layers": None},
            "files": {"scalars": SCALARS, "layers": LAYERS, "eval_predictions": PREDICTIONS,
                      "initial_digest": None, "initial_weights": None},
        }
        if previous:
            self.manifest["created"] = previous.get("created", self.manifest["created"])
            self.manifest["files"] = {**self.manifest["files"], **(previous.get("files") or {})}
            self.manifest["resumed"] = (previous.get("resumed") or []) + [{"step": self._done, "at": now()}]
            for key in ("task", "params", "seed", "model", "max_steps"):
                if self.manifest[key] in (None, {}) and previous.get(key) is not None:
                    self.manifest[key] = previous[key]
            if isinstance(previous.get("data"), dict):  # splits given again are re-recorded below
                self.manifest["data"].update(previous["data"])
        self._write_manifest()
        if train_data is not None:
            self.record_data("train", train_data, write=False)
        if eval_data is not None:
            self.record_data("eval", eval_data, write=False)
        if model is not None:
            self.watch(model, optimizer)
        else:
            self._write_manifest()

    # ---- setup -------------------------------------------------------------------------------
    def record_data(self, split: str, data: Any = None, path: str | os.PathLike | None = None,
                    *, write: bool = True) -> dict | None:
        """Record a data split ("train", "eval", or any name) by path and content fingerprint."""
        entry = describe_data(data, path)
        self.manifest["data"][split] = entry
        if write:
            self._write_manifest()
        return entry

    def watch(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> "Recorder":
        """Digest (and for small models save) the initial weights; with an optimizer, hook its
        step() to record per-layer statistics. Call before the first optimizer step."""
        self._unhook()
        if self._collector is not None:
            self._collector.remove_hooks()
            self._collector = None
        self.model = ls.unwrap(model)
        self.manifest["model"] = model_info(self.model, self.factory)
        if self.manifest["task"] is None:
            self.manifest["task"] = infer_task(self.model)
        self._save_initial(self.model)
        if self.every > 0:
            self._collector = ls.LayerStatsCollector(self.model, self.every, activations=self.activations)
            self._collector.start(self._done)
            if optimizer is not None:
                self._hooks.append(optimizer.register_step_pre_hook(
                    lambda opt, args, kwargs: self._guard(self._before)))
                self._hooks.append(optimizer.register_step_post_hook(
                    lambda opt, args, kwargs: self._guard(self._after)))
                self.manifest["recording"]["layers"] = "optimizer-hooks"
            else:
                self.manifest["recording"]["layers"] = "manual"
        self._write_manifest()
        return self

    def _save_initial(self, model: nn.Module) -> None:
        files = self.manifest["files"]
        if files.get("initial_digest") and (self.dir / DIGEST).is_file():
            return  # resumed: the initial weights are the first run's
        write_json_atomic(self.dir / DIGEST, {"step": self._done, "params": ls.initial_digest(model)})
        files["initial_digest"] = DIGEST
        n = self.manifest["model"]["n_params"]
        if n <= self.snapshot_max_params:
            from safetensors.torch import save_file
            save_file(ls.state_for_safetensors(model), str(self.dir / INITIAL_WEIGHTS),
                      metadata={"format": "pt", "step": str(self._done)})
            files["initial_weights"] = INITIAL_WEIGHTS

    # ---- per-layer statistics ------------------------------------------------------------------
    def before_optimizer_step(self, step: int | None = None) -> None:
        """Gradients of `step` are final (after backward and clipping, before the update).
        Only for loops without an optimizer given to the Recorder: its hooks do this."""
        self._check_manual("before_optimizer_step")
        self._before(step)

    def after_optimizer_step(self, step: int | None = None) -> None:
        """The update of `step` has been applied. Only for loops without an optimizer given."""
        self._check_manual("after_optimizer_step")
        self._after(step)

    def _check_manual(self, name: str) -> None:
        if self._hooks:
            raise RuntimeError(f"Recorder.{name}() is called by the optimizer's step hooks already; "
                               "calling it too would count every step twice")

    def _before(self, step: int | None = None) -> None:
        if self._collector is not None:
            self._collector.before_step(self._done + 1 if step is None else int(step))

    def _after(self, step: int | None = None) -> None:
        step = self._done + 1 if step is None else int(step)
        self._done = step
        self.global_step = max(self.global_step, step)
        if self._collector is None:
            return
        record = self._collector.after_step(step)
        if record is not None:
            self._files[LAYERS].write(record)
            self._layer_records += 1

    def _guard(self, fn) -> None:
        """Statistics must never stop a training run: the first error disables them, loudly."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            msg = f"layer statistics disabled: {type(e).__name__}: {e}"
            warnings.warn(f"degrade.Recorder: {msg}", RuntimeWarning, stacklevel=3)
            self._errors.append(msg[:500])
            self.manifest["recorder_errors"] = self._errors
            if self._collector is not None:
                self._collector.remove_hooks()
            self._collector = None
            self._write_manifest()

    # ---- scalars -------------------------------------------------------------------------------
    def log(self, step: int, loss: Any = None, *, lr: Any = None, learning_rate: Any = None,
            grad_norm: Any = None, epoch: Any = None, **scalars: Any) -> None:
        """One training record: step (optimizer steps done, from 1, as the HF Trainer counts), the
        loss (mean since the previous log call), learning rate, total grad norm, any other scalar.
        Tensors are accepted; on an accelerator they are read in batches, without a sync per step."""
        rec: dict[str, Any] = {"step": int(step)}
        for key, v in (("loss", loss), ("learning_rate", learning_rate if learning_rate is not None else lr),
                       ("grad_norm", grad_norm), ("epoch", epoch)):
            if v is not None:
                rec[key] = v
        for key, v in scalars.items():
            if v is not None:
                rec[key] = v
        if len(rec) > 1:
            self._files[SCALARS].write(rec)
        self.global_step = max(self.global_step, int(step))

    def log_record(self, record: Mapping[str, Any]) -> None:
        """A record in Hugging Face log_history form (must hold "step"), written as is."""
        rec = dict(record)
        rec["step"] = int(_value(rec["step"]))
        self._files[SCALARS].write(rec)
        self.global_step = max(self.global_step, rec["step"])

    def log_eval(self, step: int, loss: Any = None, metrics: Mapping[str, Any] | None = None,
                 per_example: Any = None, name: str | None = None, epoch: Any = None) -> None:
        """An evaluation at `step`: eval_loss and eval_<metric> (eval_<name>_... for a named set),
        and optionally per-example scores, written to eval_predictions.jsonl.

        per_example: columns {"loss": [...], "correct": [...], "index"?: [...], ...} (lists,
        tensors or arrays) or a list of row dicts; index defaults to the position in the eval
        data. When `loss` is not given its mean is used, and accuracy from `correct`.
        """
        prefix = f"eval_{name}_" if name else "eval_"
        rows = self._rows(per_example) if per_example is not None else None
        metrics = dict(metrics or {})
        if rows:
            if loss is None and all(isinstance(r.get("loss"), (int, float)) for r in rows):
                loss = sum(r["loss"] for r in rows) / len(rows)
            if not any(k.endswith("accuracy") for k in metrics) and \
                    all(isinstance(r.get("correct"), (bool, int, float)) for r in rows):
                metrics["accuracy"] = sum(float(r["correct"]) for r in rows) / len(rows)
        rec: dict[str, Any] = {"step": int(step)}
        if loss is not None:
            rec[prefix + "loss"] = loss
        for k, v in metrics.items():
            rec[k if k.startswith("eval_") else prefix + k] = v
        if epoch is not None:
            rec["epoch"] = epoch
        if len(rec) > 1:
            self._files[SCALARS].write(rec)
        self._files[SCALARS].flush()
        if rows:
            out = self._files[PREDICTIONS]
            for i, r in enumerate(rows):
                line = {"step": int(step), "index": int(r.pop("index", i))}
                if name:
                    line["set"] = name
                line.update(r)
                out.write(line)
        self.global_step = max(self.global_step, int(step))

    @staticmethod
    def _rows(per_example: Any) -> list[dict]:
        if isinstance(per_example, Mapping):
            cols = {k: _column(v) for k, v in per_example.items()}
            lengths = {len(v) for v in cols.values()}
            if len(lengths) > 1:
                raise ValueError(f"per_example columns differ in length: "
                                 f"{ {k: len(v) for k, v in cols.items()} }")
            n = lengths.pop() if lengths else 0
            return [{k: v[i] for k, v in cols.items()} for i in range(n)]
        return [{k: _value(v) for k, v in dict(r).items()} for r in per_example]

    # ---- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, model: nn.Module | None = None, step: int | None = None,
                        tokenizer: Any = None) -> Path:
        """OUTPUT_DIR/checkpoint-STEP/ in the Hugging Face Trainer layout: model.safetensors (plus
        config.json for a transformers model; a tokenizer's files when one is given)."""
        model = ls.unwrap(model if model is not None else self.model)
        if model is None:
            raise ValueError("save_checkpoint needs a model (none given and none watched)")
        step = self.global_step if step is None else int(step)
        path = self.output_dir / f"checkpoint-{step}"
        path.mkdir(parents=True, exist_ok=True)
        if is_hf_model(model):
            model.save_pretrained(str(path))
        else:
            from safetensors.torch import save_file
            save_file(ls.state_for_safetensors(model), str(path / "model.safetensors"),
                      metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(str(path))
        self._files[SCALARS].flush()
        self.global_step = max(self.global_step, step)
        self._write_manifest()
        return path

    # ---- end -----------------------------------------------------------------------------------
    def close(self, status: str = "finished", error: str | None = None) -> None:
        """Finish the manifest (global_step, finished time, status) and close the files.
        Logging after close() appends again (e.g. an evaluation after training)."""
        if self._collector is not None:
            record = self._collector.flush()
            if record is not None:
                self._files[LAYERS].write(record)
                self._layer_records += 1
            self._collector.remove_hooks()
            if self._layer_records == 0 and self.global_step >= self.every and \
                    self.manifest["recording"]["layers"] == "manual":
                warnings.warn("degrade.Recorder: no per-layer statistics were recorded: pass "
                              "optimizer= to the Recorder (or call before_/after_optimizer_step)",
                              RuntimeWarning, stacklevel=2)
        self._unhook()
        self.manifest["global_step"] = self.global_step
        self.manifest["finished"] = now()
        self.manifest["status"] = status
        if error:
            self.manifest["error"] = error[:1000]
        self._write_manifest()
        for f in self._files.values():
            f.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("interrupted")
        else:
            self.close("failed", f"{exc_type.__name__}: {exc}")

    # ---- internals -----------------------------------------------------------------------------
    def _unhook(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def _write_manifest(self) -> None:
        self.manifest["global_step"] = self.global_step
        if "mlflow_run_id" not in self.manifest:
            run_id = _active_mlflow_run_id()
            if run_id:
                self.manifest["mlflow_run_id"] = run_id
        write_json_atomic(self.dir / MANIFEST, self.manifest)

    def _read_manifest(self) -> dict | None:
        try:
            m = json.loads((self.dir / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return m if isinstance(m, dict) else None


def _active_mlflow_run_id() -> str | None:
    """The MLflow run this process is logging to (the Trainer's report_to="mlflow" starts one before
    the callbacks' on_train_begin), so that `degrade diagnose --store mlflow:` can nest its run under
    it. Only when the training script already imported mlflow: the recorder never imports it."""
    mlflow = sys.modules.get("mlflow")
    try:
        run = mlflow.active_run() if mlflow is not None else None
        return str(run.info.run_id) if run is not None else None
    except Exception:  # noqa: BLE001 - a half-imported or odd mlflow: record without the link
        return None


def _truncate_after(path: Path, step: int) -> None:
    """Drop records after `step` (written after the checkpoint a resumed run restarts from)."""
    if not path.is_file():
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a partial last line of a killed run
            s = rec.get("step") if isinstance(rec, dict) else None
            if isinstance(s, (int, float)) and not math.isnan(s) and s <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)
