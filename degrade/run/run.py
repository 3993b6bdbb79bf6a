"""The Run: everything degrade knows about one training run, loaded lazily.

Readers (hf_trainer.py, native.py, model_dir.py) find files and validate them cheaply; the model,
the data and the forward passes are only loaded when a check asks, and then only once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from degrade.budget import Budget
from degrade.errors import InputError
from degrade.run.files import find_weights, read_json
from degrade.run.history import History


@dataclass
class RunOptions:
    train_data: str | None = None
    eval_data: str | None = None
    checkpoint: str = "latest"  # latest | best | PATH
    model_factory: str | None = None  # module:callable
    trust_remote_code: bool = False
    budget: str = "standard"
    seed: int = 0
    device: str = "cpu"


@dataclass
class Checkpoint:
    step: int
    path: Path  # folder holding config.json and/or the weights

    @property
    def weights(self) -> Path | None:
        return find_weights(self.path)


@dataclass
class Run:
    path: Path
    format: str  # hf-trainer | degrade | model-dir
    options: RunOptions = field(default_factory=RunOptions)
    history: History | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)  # sorted by step
    manifest: dict[str, Any] | None = None  # native runs: degrade/manifest.json
    native_dir: Path | None = None  # RUN/degrade/ when the Recorder wrote one
    best_checkpoint_hint: str | None = None  # trainer_state's best_model_checkpoint
    # Shared between checks (DESIGN.md §1): e.g. context["axes"] lists failure axes that a
    # perception check found, so reachability/instantiation checks can defer to them.
    context: dict[str, Any] = field(default_factory=dict)

    # ---- budget ----------------------------------------------------------------------------
    @cached_property
    def budget(self) -> Budget:
        return Budget.named(self.options.budget)

    # ---- the model -------------------------------------------------------------------------
    @cached_property
    def model_checkpoint(self) -> Checkpoint | None:
        """The checkpoint whose model the checks examine (--checkpoint latest|best|PATH)."""
        choice = self.options.checkpoint
        if choice not in ("latest", "best"):
            p = Path(choice)
            p = p if p.is_absolute() or p.exists() else self.path / choice
            if not p.is_dir():
                raise InputError(choice, "is not a checkpoint folder")
            step = next((c.step for c in self.checkpoints if c.path.resolve() == p.resolve()), -1)
            return Checkpoint(step, p)
        with_weights = [c for c in self.checkpoints if c.weights is not None]
        if not with_weights:
            return None
        if choice == "best":
            best = self._best_checkpoint(with_weights)
            if best is not None:
                return best
        return with_weights[-1]

    def _best_checkpoint(self, candidates: list[Checkpoint]) -> Checkpoint | None:
        # best_model_checkpoint is often an absolute path from another machine: match its name.
        if self.best_checkpoint_hint:
            name = Path(self.best_checkpoint_hint).name
            for c in candidates:
                if c.path.name == name:
                    return c
        if self.history and (es := self.history.main_eval_set()) is not None:
            steps, losses = self.history.series("loss", es)
            by_step = {int(s): v for s, v in zip(steps, losses)}
            scored = [(by_step[c.step], c) for c in candidates if c.step in by_step]
            if scored:
                return min(scored, key=lambda t: t[0])[1]
        return None

    @cached_property
    def config(self) -> dict[str, Any] | None:
        ckpt = self.model_checkpoint
        if ckpt is None or not (ckpt.path / "config.json").is_file():
            return None
        return read_json(ckpt.path / "config.json")

    def model_unavailable(self) -> str | None:
        """Why no model can be examined, or None when one can."""
        ckpt = self.model_checkpoint
        if ckpt is None:
            return f"no model weights in {self.path} (no checkpoint-N/ with weights, none at the root)"
        if ckpt.weights is None:
            if (ckpt.path / "adapter_model.safetensors").is_file():
                return f"{ckpt.path} holds a PEFT adapter only; merge it into its base model first"
            return f"no model weights in {ckpt.path}"
        if self.config is None and not self.options.model_factory:
            hint = ""
            if self.manifest and self.manifest.get("model", {}).get("factory"):
                hint = f" (the recorder noted --model-factory {self.manifest['model']['factory']})"
            return f"{ckpt.path} has weights but no config.json: pass --model-factory{hint}"
        return None

    def model(self):
        """The chosen checkpoint's model, in eval mode, loaded once (a ModelHandle)."""
        if "_model" not in self.__dict__:
            reason = self.model_unavailable()
            if reason:
                raise InputError(None, reason)
            self.__dict__["_model"] = self.load_model(self.model_checkpoint)
        return self.__dict__["_model"]

    def load_model(self, checkpoint: Checkpoint):
        """A fresh (uncached) ModelHandle for any checkpoint, e.g. to compare checkpoints."""
        from degrade.run.load import load_model
        return load_model(checkpoint.path, factory=self.options.model_factory,
                          trust_remote_code=self.options.trust_remote_code,
                          device=self.options.device, run_config=self.run_config,
                          task_hint=self.task_hint)

    @cached_property
    def run_config(self) -> dict[str, Any]:
        """What the factory may be called with: the recorder's params, else the model config."""
        if self.manifest and isinstance(self.manifest.get("params"), dict):
            return self.manifest["params"]
        return self.config or {}

    @cached_property
    def task_hint(self) -> str | None:
        """causal-lm | sequence-classification, from the manifest or the data, before loading."""
        if self.manifest and self.manifest.get("task"):
            return self.manifest["task"]
        for data in (self.eval_data, self.train_data):
            if data is not None:
                return "sequence-classification" if data.label is not None else "causal-lm"
        return None

    @cached_property
    def task(self) -> str | None:
        if self.model_unavailable() is None:
            return self.model().task
        return self.task_hint

    # ---- data ------------------------------------------------------------------------------
    @cached_property
    def train_data(self):
        """The training examples, or a uniform sample of budget.max_train_rows of them."""
        return self._training[0] if self._training else None

    @cached_property
    def train_pass(self):
        """Counts and row hashes over every training row (run/train_pass.py)."""
        from degrade.run.data import batches_of
        from degrade.run.train_pass import TrainPass
        tr = self.train_data
        if tr is None:
            return None
        if self._training is not None and self._training[0] is tr:
            return self._training[1]
        return TrainPass.over(batches_of(tr), seed=self.options.seed)  # examples set directly

    @cached_property
    def _training(self):
        from degrade.run.train_pass import read_training
        path = self.options.train_data or self._manifest_data_path("train")
        if path is None:
            return None
        return read_training(Path(path), self._tokenizer_for_text, self.budget.max_train_rows,
                             self.options.seed, reservoir=self.budget.max_eval_examples or 10_000)

    @cached_property
    def eval_data(self):
        from degrade.run.data import load_examples
        path = self.options.eval_data or self._manifest_data_path("eval")
        return None if path is None else load_examples(Path(path), tokenizer=self._tokenizer_for_text)

    def train_batches(self, batch: int = 10_000):
        """(row offset, Examples) over every training row: from memory, or streamed from the file
        when train_data is only a sample of it."""
        from degrade.run.data import batches_of, iter_examples
        tr = self.train_data
        if tr is None:
            return iter(())
        if tr.is_sample:
            return iter_examples(tr.path, self._tokenizer_for_text, batch)
        return batches_of(tr, batch)

    def _manifest_data_path(self, split: str) -> str | None:
        entry = ((self.manifest or {}).get("data") or {}).get(split) or {}
        p = entry.get("path")
        return p if p and Path(p).exists() else None

    def _tokenizer_for_text(self):
        from degrade.run.load import load_tokenizer
        folders = [c.path for c in self.checkpoints[::-1]] + [self.path]
        if self.model_checkpoint is not None:
            folders.insert(0, self.model_checkpoint.path)
        return load_tokenizer(folders)

    # ---- shared forward passes -------------------------------------------------------------
    def eval_scores(self, train_mode: bool = False):
        """Per-example scores of the chosen model on the eval data, computed once per mode."""
        key = f"_scores_{train_mode}"
        if key not in self.__dict__:
            from degrade.probing.scoring import score
            self.__dict__[key] = score(self.model(), self.eval_data, self.budget.max_eval_examples,
                                       train_mode=train_mode, seed=self.options.seed)
        return self.__dict__[key]

    def train_scores(self):
        """Per-example scores of the chosen model on a budget sample of the training data (the
        sample in memory), computed once for the checks that ask how well it fits its data."""
        if "_train_scores" not in self.__dict__:
            from degrade.probing.scoring import score
            self.__dict__["_train_scores"] = score(self.model(), self.train_data,
                                                   self.budget.max_train_examples, seed=self.options.seed)
        return self.__dict__["_train_scores"]

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "format": self.format,
                "checkpoint": str(self.model_checkpoint.path) if self._safe_ckpt() else None,
                "task": self.task_hint, "checkpoints": len(self.checkpoints)}

    def _safe_ckpt(self) -> Checkpoint | None:
        try:
            return self.model_checkpoint
        except InputError:
            return None
