"""The Run: everything degrade knows about one training run, loaded lazily.

Readers (hf_trainer.py, native.py, model_dir.py) find files and validate them cheaply; the model,
the data and the forward passes are only loaded when a check asks, and then only once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

from degrade.budget import Budget
from degrade.errors import InputError
from degrade.inputs.frozen import FrozenDict, freeze, thaw
from degrade.inputs.model_config import read_config
from degrade.run.files import find_weights
from degrade.run.history import History
from degrade.run.tasks import CAUSAL_LM, SEQ2SEQ, SEQ_CLS

# What a fresh view of the run (Run.detached) must recompute: the model and everything derived
# from it. Inputs read from files (history, configs, data) are immutable and shared.
MODEL_CACHES = ("_model", "_caches", "task", "engine")
DATA_CACHES = ("_training", "train_data", "train_pass", "eval_data")


@dataclass
class RunOptions:
    train_data: str | None = None
    eval_data: str | None = None
    checkpoint: str = "latest"  # latest | best | PATH
    model_factory: str | None = None  # module:callable
    trust_remote_code: bool = False
    budget: str = "standard"
    seed: int = 0
    device: str = "auto"  # auto: CUDA when available (resolved when a model is loaded)
    base_model: str | None = None  # a PEFT adapter's base model folder (else found from its config)


@dataclass
class Checkpoint:
    step: int
    path: Path  # folder holding config.json and/or the weights

    @property
    def weights(self) -> Path | None:
        return find_weights(self.path)

    @property
    def adapter(self) -> Path | None:
        """A PEFT adapter's weights (adapter_model.safetensors with adapter_config.json), or None."""
        from degrade.run.adapter import find_adapter
        return find_adapter(self.path)

    @property
    def loadable(self) -> bool:
        return self.weights is not None or self.adapter is not None


@dataclass
class Run:
    path: Path
    format: str  # hf-trainer | degrade | model-dir
    options: RunOptions = field(default_factory=RunOptions)
    history: History | None = None
    checkpoints: tuple[Checkpoint, ...] = ()  # sorted by step
    manifest: Mapping[str, Any] | None = None  # native runs: degrade/manifest.json
    native_dir: Path | None = None  # RUN/degrade/ when the Recorder wrote one
    best_checkpoint_hint: str | None = None  # trainer_state's best_model_checkpoint
    results: Mapping[str, Mapping[str, Any]] = field(default_factory=FrozenDict)  # *_results.json
    # Shared between checks (DESIGN.md §1): context["axes"] lists failure axes that a check
    # found, so checks run after it can defer to them. The sandbox (degrade/sandbox/) lets a
    # check append axes and nothing else.
    context: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.checkpoints = tuple(self.checkpoints)
        self.manifest = freeze(self.manifest) if self.manifest is not None else None

    def detached(self, keep_data: bool = True) -> "Run":
        """A view with the same inputs and nothing computed from the model: what the checks after
        a check that timed out or changed the model must see (that check may still be running)."""
        drop = MODEL_CACHES + (() if keep_data else DATA_CACHES)
        # (_model_failed is kept: a model that could not be loaded stays so for the checks after)
        fresh = dataclasses.replace(self)  # the same context: axes published so far still count
        fresh.__dict__.update({k: v for k, v in self.__dict__.items()
                               if k not in drop and k not in fresh.__dict__})
        return fresh

    def cache(self, key: str, compute: Callable[[], Any]) -> Any:
        """A value derived from the model (scores, targets), computed once per run view."""
        caches = self.__dict__.setdefault("_caches", {})
        if key not in caches:
            caches[key] = compute()
        return caches[key]

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
        with_weights = [c for c in self.checkpoints if c.loadable]
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
    def config(self) -> Mapping[str, Any] | None:
        """The chosen checkpoint's config.json (an adapter's: its base model's)."""
        ckpt = self.model_checkpoint
        if ckpt is None:
            return None
        if (ckpt.path / "config.json").exists():
            return freeze(read_config(ckpt.path / "config.json", self.path))
        if ckpt.weights is None and ckpt.adapter is not None:
            base, _ = self.base_model_dir
            return None if base is None else freeze(read_config(base / "config.json"))
        return None

    @cached_property
    def base_model_dir(self) -> tuple[Path | None, str]:
        """A PEFT adapter checkpoint's base model folder (or None) and where it was looked for."""
        from degrade.run.adapter import base_model_dir
        ckpt = self.model_checkpoint
        return base_model_dir(ckpt.path, self.options.base_model, self.path)

    def model_unavailable(self) -> str | None:
        """Why no model can be examined, or None when one can (run/availability.py)."""
        from degrade.run.availability import model_unavailable
        return model_unavailable(self)

    def model(self):
        """The chosen checkpoint's model, in eval mode, loaded once (a ModelHandle). The data given
        with it is checked against it here (vocabulary, targets, position table): data that does
        not fit the model is bad input."""
        if "_model" not in self.__dict__:
            reason = self.model_unavailable()
            if reason:
                raise InputError(None, reason)
            handle = self.load_model(self.model_checkpoint)
            for data in (self.eval_data, self.train_data):
                if data is not None and (problem := handle.fit_problem(data)) is not None:
                    raise InputError(data.path, problem)
            self.__dict__["_model"] = handle
        return self.__dict__["_model"]

    def load_model(self, checkpoint: Checkpoint):
        """A fresh (uncached) ModelHandle for any checkpoint, e.g. to compare checkpoints."""
        from degrade.run.load import load_model
        if checkpoint.weights is None and checkpoint.adapter is not None:
            from degrade.run.adapter import base_model_dir
            from degrade.run.load import load_with_adapter
            base, where = base_model_dir(checkpoint.path, self.options.base_model, self.path)
            if base is None:
                raise InputError(checkpoint.path, f"holds a PEFT adapter whose base model is not here: {where}")
            return load_with_adapter(checkpoint.path, base, trust_remote_code=self.options.trust_remote_code,
                                     device=self.options.device, root=self.path)
        return load_model(checkpoint.path, factory=self.options.model_factory,
                          trust_remote_code=self.options.trust_remote_code,
                          device=self.options.device, run_config=thaw(self.run_config),
                          run_config_path=self._run_config_path(checkpoint), task_hint=self.task_hint,
                          root=self.path)

    @cached_property
    def run_config(self) -> Mapping[str, Any]:
        """What the factory may be called with: the recorder's params, else the model config."""
        if self.manifest and isinstance(self.manifest.get("params"), dict):
            return self.manifest["params"]
        return self.config or FrozenDict()

    def recorded_arg(self, key: str) -> Any:
        """A training setting the recorder kept (its params, then the Trainer's arguments), or None."""
        for block in ("params", "training_args"):
            value = ((self.manifest or {}).get(block) or {}).get(key)
            if value is not None:
                return value
        return None

    def _run_config_path(self, checkpoint: Checkpoint) -> Path:
        """The file run_config came from, for messages about it."""
        if self.manifest and isinstance(self.manifest.get("params"), dict) and self.native_dir:
            return self.native_dir / "manifest.json"
        return checkpoint.path / "config.json"

    @cached_property
    def task_hint(self) -> str | None:
        """causal-lm | sequence-classification, from the manifest or the data, before loading."""
        if self.manifest and self.manifest.get("task"):
            return self.manifest["task"]
        for data in (self.eval_data, self.train_data):
            if data is not None:
                return SEQ_CLS if data.label is not None else SEQ2SEQ if data.source is not None else CAUSAL_LM
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
                             self.options.seed, reservoir=self.budget.max_eval_examples or 10_000,
                             decoder_start=self.decoder_start)

    @cached_property
    def eval_data(self):
        from degrade.run.data import load_examples
        path = self.options.eval_data or self._manifest_data_path("eval")
        return None if path is None else load_examples(Path(path), tokenizer=self._tokenizer_for_text,
                                                       decoder_start=self.decoder_start)

    @cached_property
    def decoder_start(self) -> int | None:
        """An encoder-decoder checkpoint's decoder start token (its data are source/target pairs),
        from config.json; None for any other model or when there is no config."""
        cfg = self.config or {}
        if not cfg.get("is_encoder_decoder"):
            return None
        for key in ("decoder_start_token_id", "pad_token_id", "bos_token_id"):
            if isinstance(cfg.get(key), int) and cfg[key] >= 0:
                return int(cfg[key])
        return 0

    def train_batches(self, batch: int = 10_000):
        """(row offset, Examples) over every training row: from memory, or streamed from the file
        when train_data is only a sample of it."""
        from degrade.run.data import batches_of, iter_examples
        tr = self.train_data
        if tr is None:
            return iter(())
        if tr.is_sample:
            return iter_examples(tr.path, self._tokenizer_for_text, batch, self.decoder_start)
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
        return load_tokenizer(folders, self.options.trust_remote_code, self.path)

    # ---- shared forward passes -------------------------------------------------------------
    @cached_property
    def meter(self):
        """The diagnosis' tally of model compute (engine/meter.py): kept across detached views."""
        from degrade.engine.meter import Meter
        return Meter()

    @cached_property
    def engine(self):
        """The forward engine (degrade/engine/): the shared passes and the probes' samples."""
        from degrade.engine import Engine
        return Engine(self, self.meter)

    def eval_scores(self, train_mode: bool = False):
        """Per-example scores of the chosen model on the eval sample (the engine's shared pass)."""
        return self.engine.eval_pass(train_mode).scores

    def train_scores(self):
        """Per-example scores of the chosen model on the training sample (the engine's one
        training pass), for the checks that ask how well it fits its data."""
        return self.engine.train_pass().scores

    def describe(self) -> dict[str, Any]:
        out = {"path": str(self.path), "format": self.format,
               "checkpoint": str(self.model_checkpoint.path) if self._safe_ckpt() else None,
               "task": self.task_hint, "checkpoints": len(self.checkpoints)}
        if self.history is not None and (self.history.notes or self.history.step_problem):
            out["notes"] = [*self.history.notes, *([self.history.step_problem] if self.history.step_problem else [])]
        if linked := self.linked_weights():
            out["linked_weights"] = linked
        return out

    def linked_weights(self) -> dict[str, str]:
        """Weight files that are links out of the run dir (followed, and named here)."""
        base, out = self.path.resolve(), {}
        for c in self.checkpoints:
            w = c.weights
            if w is not None and base not in w.resolve().parents:
                out[str(w.relative_to(self.path)) if self.path in w.parents else str(w)] = str(w.resolve())
        return out

    def _safe_ckpt(self) -> Checkpoint | None:
        try:
            return self.model_checkpoint
        except InputError:
            return None
