"""degrade.DegradeCallback: the native run format from a Hugging Face Trainer.

    trainer = Trainer(model, args, train_dataset=train, eval_dataset=ev,
                      callbacks=[degrade.DegradeCallback(params=cfg)])

Writes ARGS.OUTPUT_DIR/degrade/ next to the Trainer's own output (trainer_state.json and
checkpoint-N/ stay as they are; the Trainer writes the checkpoints). Only the main process
(state.is_world_process_zero) records. Events used (transformers.TrainerCallback):

  on_train_begin          manifest (params, training arguments, seed, code, packages, data
                          fingerprints, model) and the initial-weights digest/snapshot
  on_pre_optimizer_step   per-layer gradient and weight norms, every `every` steps (the
                          gradients here are clipped: what the optimizer will use)
  on_optimizer_step       per-layer update ratios of that step
  on_log                  every Trainer log record (train loss, grad_norm, learning_rate, eval_*)
                          to scalars.jsonl, in log_history form
  on_evaluate             the eval data's fingerprint, when it was not given to the callback
  on_save                 manifest update (global_step)
  on_train_end            manifest finished (global_step, status)

With sharded training (FSDP/DeepSpeed ZeRO-3) rank 0 only sees its shards: per-layer statistics
then describe those shards.
"""
from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from degrade.record.recorder import Recorder

# Training arguments that checks read as run parameters (the rest go to manifest.training_args).
_ARG_PARAMS = ("learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
               "max_grad_norm", "num_train_epochs", "max_steps", "lr_scheduler_type",
               "warmup_ratio", "warmup_steps", "per_device_train_batch_size",
               "gradient_accumulation_steps", "optim", "label_smoothing_factor", "fp16", "bf16",
               "seed")


class _TrainerRecorder(Recorder):
    writer = "degrade.DegradeCallback"


class DegradeCallback(TrainerCallback):
    """Record a Trainer run in degrade's native format.

    Args:
        every: per-layer statistics at step 1 and every `every` optimizer steps (0: never).
        params: extra run parameters (merged over the Trainer's main training arguments).
        task: "causal-lm" | "sequence-classification" | None (inferred from the model class).
        train_data, eval_data: data (or paths) to fingerprint; default: the Trainer's training
            dataset, and its eval dataset at the first evaluation.
        factory: "module:callable" for a model that is not a transformers model.
        activations: also record activation statistics on recorded steps.
        snapshot_max_params: see Recorder.
    """

    def __init__(self, every: int = 50, params: Any = None, task: str | None = None,
                 train_data: Any = None, eval_data: Any = None, factory: str | None = None,
                 activations: bool = False, snapshot_max_params: int | None = None):
        self.every = every
        self.params = params
        self.task = task
        self.train_data = train_data
        self.eval_data = eval_data
        self.factory = factory
        self.activations = activations
        self.snapshot_max_params = snapshot_max_params
        self.recorder: Recorder | None = None

    # ---- events ------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if not state.is_world_process_zero:
            return
        from degrade.record.manifest import json_safe
        params = {k: getattr(args, k) for k in _ARG_PARAMS if hasattr(args, k)}
        user = json_safe(self.params) if self.params is not None else {}
        if isinstance(user, dict):
            params.update(user)
        else:
            params["user"] = user
        train = self.train_data
        if train is None and train_dataloader is not None:
            train = getattr(train_dataloader, "dataset", None)
        extra = {} if self.snapshot_max_params is None else {"snapshot_max_params": self.snapshot_max_params}
        start = int(state.global_step or 0)
        self.recorder = _TrainerRecorder(
            args.output_dir, params=params, seed=getattr(args, "seed", None), task=self.task,
            model=None, train_data=train, eval_data=self.eval_data, every=self.every,
            factory=self.factory, activations=self.activations, resume=start > 0,
            start_step=start, **extra)
        rec = self.recorder
        rec.manifest["training_args"] = _training_args(args)
        if getattr(state, "max_steps", None):
            rec.manifest["max_steps"] = int(state.max_steps)
        rec._write_manifest()
        if model is not None:
            rec.watch(model)  # no optimizer hooks: the Trainer's events mark the steps
            rec.manifest["recording"]["layers"] = "trainer-callback" if rec.every > 0 else None
            rec._write_manifest()

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.recorder is not None and state.is_world_process_zero:
            step = int(state.global_step) + 1  # the step being taken
            self.recorder._guard(lambda: self.recorder._before(step))

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.recorder is not None and state.is_world_process_zero:
            step = int(state.global_step) + 1
            self.recorder._guard(lambda: self.recorder._after(step))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.recorder is None or not state.is_world_process_zero or not logs:
            return
        self.recorder.log_record({**logs, "step": int(state.global_step)})

    def on_evaluate(self, args, state, control, eval_dataloader=None, **kwargs):
        # The metrics came through on_log; what is new here is the eval data, when not given.
        rec = self.recorder
        if rec is None or not state.is_world_process_zero or rec.manifest["data"].get("eval"):
            return
        data = getattr(eval_dataloader, "dataset", None)
        if data is not None:
            rec.record_data("eval", data)

    def on_save(self, args, state, control, **kwargs):
        if self.recorder is not None and state.is_world_process_zero:
            self.recorder.global_step = max(self.recorder.global_step, int(state.global_step))
            self.recorder._write_manifest()

    def on_train_end(self, args, state, control, **kwargs):
        if self.recorder is not None and state.is_world_process_zero:
            self.recorder.global_step = max(self.recorder.global_step, int(state.global_step))
            if getattr(state, "best_model_checkpoint", None):
                self.recorder.manifest["best_model_checkpoint"] = state.best_model_checkpoint
            self.recorder.close()


def _training_args(args) -> dict[str, Any]:
    from degrade.record.manifest import json_safe
    try:
        d = args.to_dict()
    except Exception:  # noqa: BLE001 - an exotic args object: keep what is readable
        d = dict(getattr(args, "__dict__", {}))
    return {k: json_safe(v) for k, v in d.items() if not k.endswith("_token") and not k.startswith("_")}
