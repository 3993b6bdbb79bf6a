"""End-to-end scenarios: five small, real training runs, each with one known verdict.

Each scenario trains a tiny model for real (seconds on a CPU) and writes a run the way users'
runs look: a Hugging Face Trainer output_dir (degrade.bench.train.train_hf), or for the plain
nn.Module a folder written by degrade's Recorder from a plain PyTorch loop. The train and eval
data are written NEXT TO the run dir, never inside it, so degrade sees them only through
--train-data / --eval-data:

    ROOT/<name>/run/          the run dir (what `degrade diagnose` reads)
    ROOT/<name>/train.jsonl   its training data
    ROOT/<name>/eval.jsonl    its evaluation data
    ROOT/<name>/scenario.json what was built, with which recipe (the cache key)

| scenario | the fault | expected verdict | expected finding |
|---|---|---|---|
| healthy | none: a 2-layer GPT-2 learns the copy task to ~100% | none | - |
| eval_overlap | half the eval rows are training rows; the model memorised them | observation | O103 |
| early_stop | constant LR, stopped while the loss still falls fast | reachability | R201 |
| causal_leak | TinyGPT without its causal mask (plain loop + Recorder) | instantiation | I301 |
| perception_length | learned absolute positions, trained on k<=6, evaluated on k<=14 | perception | P402 |

`build(name, root)` builds one scenario (or returns the cached one when ROOT/<name> already holds
it with the same recipe); `build_all(root)` builds them all. Training is quiet (no progress bars,
no log dicts) and runs on one CPU thread: these models are so small that a second thread only
adds synchronisation, and on a busy machine it makes the run several times slower.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from degrade.bench.tasks import IGNORE, copy_rows, modular_addition_rows

RECIPE_VERSION = 1  # bump when a recipe changes: cached scenarios are rebuilt
MARKER = ".degrade-scenario"  # in every folder build() made, so that only those are ever replaced

COPY_VOCAB = 16  # symbols 0..15, separator 16: 17 tokens

# What each scenario trains, in one place (also the cache key). Steps and sizes are tuned so that
# all five build in well under two minutes of one CPU core and the healthy run really converges
# (eval token accuracy ~1, loss flat at the end).
RECIPES: dict[str, dict[str, Any]] = {
    "healthy": {
        "task": "copy", "n_train": 6000, "n_eval": 512, "train_k": [4, 8], "eval_k": [4, 8],
        "max_steps": 200, "lr": 3e-3, "batch_size": 256, "warmup_steps": 20,
        "scheduler": "linear", "eval_steps": 20, "logging_steps": 5, "weight_decay": 0.01,
    },
    "early_stop": {
        "task": "copy", "n_train": 6000, "n_eval": 512, "train_k": [4, 8], "eval_k": [4, 8],
        "max_steps": 50, "lr": 3e-3, "batch_size": 128, "warmup_steps": 5,
        "scheduler": "constant_with_warmup", "eval_steps": 5, "logging_steps": 2,
        "weight_decay": 0.01,
    },
    "eval_overlap": {
        "task": "modular_addition", "p": 23, "train_fraction": 0.5, "overlap_fraction": 0.5,
        "max_steps": 300, "lr": 3e-3, "batch_size": 64, "warmup_steps": 10, "scheduler": "linear",
        "eval_steps": 30, "logging_steps": 5, "weight_decay": 0.0,
    },
    "causal_leak": {
        "task": "copy", "n_train": 6000, "n_eval": 512, "train_k": [4, 8], "eval_k": [4, 8],
        "max_steps": 120, "lr": 3e-3, "batch_size": 128, "warmup_steps": 10,
        "eval_steps": 20, "logging_steps": 5, "weight_decay": 0.01,
        "model": {"vocab": COPY_VOCAB + 1, "d_model": 64, "n_layer": 2, "n_head": 4,
                  "max_len": 64, "causal": False},
    },
    "perception_length": {
        "task": "copy", "n_train": 6000, "n_eval": 768, "train_k": [4, 6], "eval_k": [4, 14],
        "n_positions": 64, "max_steps": 200, "lr": 3e-3, "batch_size": 128, "warmup_steps": 20,
        "scheduler": "linear", "eval_steps": 20, "logging_steps": 5, "weight_decay": 0.01,
    },
}

EXPECTED: dict[str, tuple[str, tuple[str, ...], str]] = {
    "healthy": ("none", (), "no fault: a 2-layer GPT-2 trained to convergence on the copy task"),
    "eval_overlap": ("observation", ("O103",),
                     "half of the eval set are training rows, which the model memorised"),
    "early_stop": ("reachability", ("R201",),
                   "training stopped after 50 steps while the loss was still falling fast"),
    "causal_leak": ("instantiation", ("I301",),
                    "the attention has no causal mask: each position sees the token it predicts"),
    "perception_length": ("perception", ("P402",),
                          "learned absolute positions, trained on sequences up to 13 tokens and "
                          "evaluated on up to 29: the positions past 13 were never trained"),
}

# The CLI spells faults with hyphens (`degrade demo --fault early-stop`).
ALIASES = {name.replace("_", "-"): name for name in RECIPES}


@dataclass(frozen=True)
class Scenario:
    name: str
    run_dir: Path
    train_data: Path
    eval_data: Path
    model_factory: str | None
    expected_layer: str  # observation | reachability | instantiation | perception | none
    expected_codes: tuple[str, ...]
    fault: str  # one sentence: what was done to this run
    build_seconds: float = 0.0  # training time when built now, 0.0 when it came from the cache
    cached: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # e.g. the final eval accuracy

    def diagnose_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for degrade.diagnose(run_dir, **kwargs)."""
        return {"train_data": self.train_data, "eval_data": self.eval_data,
                "model_factory": self.model_factory}

    def cli_args(self) -> list[str]:
        """`degrade diagnose` arguments (without the leading "diagnose")."""
        args = [str(self.run_dir), "--train-data", str(self.train_data),
                "--eval-data", str(self.eval_data)]
        if self.model_factory:
            args += ["--model-factory", self.model_factory]
        return args


def names() -> list[str]:
    return list(RECIPES)


def canonical(name: str) -> str:
    key = ALIASES.get(name, name)
    if key not in RECIPES:
        raise ValueError(f"unknown scenario {name!r}; choose from {', '.join(ALIASES)}")
    return key


# ---- building ----------------------------------------------------------------------------------
def build(name: str, root: str | Path, *, force: bool = False,
          on_step: Callable[[int, int], None] | None = None) -> Scenario:
    """Build scenario `name` under ROOT/<name>/ (or reuse it when already built with this recipe).

    on_step(step, max_steps) is called during training (for a progress display)."""
    name = canonical(name)
    folder = Path(root) / name
    meta_path = folder / "scenario.json"
    recipe = {"version": RECIPE_VERSION, **RECIPES[name]}
    key = _recipe_key(name)
    if not force and is_cached(name, root):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return _scenario(name, folder, 0.0, True, meta.get("info", {}))
    if folder.exists():
        ours = (folder / MARKER).is_file() or (folder / "scenario.json").is_file()
        if not ours and any(folder.iterdir()):
            raise FileExistsError(f"{folder} exists and was not made by degrade.bench.scenarios: "
                                  "not overwriting it")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("built by degrade.bench.scenarios; safe to delete\n")
    start = time.perf_counter()
    with quiet_training():
        info = _BUILDERS[name](folder, RECIPES[name], on_step)
    seconds = time.perf_counter() - start
    meta_path.write_text(json.dumps({"name": name, "recipe_key": key, "recipe": recipe,
                                     "build_seconds": round(seconds, 2), "info": info},
                                    indent=2), encoding="utf-8")
    return _scenario(name, folder, seconds, False, info)


def build_all(root: str | Path, *, force: bool = False, workers: int | None = None) -> dict[str, Scenario]:
    """Build every scenario. With workers > 1 (default: 2 when the machine has 2 or more cores)
    they train in that many fresh processes, one CPU thread each, longest first; a scenario
    already built (cached) costs nothing either way."""
    import os
    todo = sorted((n for n in RECIPES if force or not is_cached(n, root)), key=lambda n: -_COST[n])
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    built: dict[str, Scenario] = {}
    if workers > 1 and len(todo) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx) as pool:
            futures = {name: pool.submit(build, name, str(root), force=force) for name in todo}
            built = {name: f.result() for name, f in futures.items()}
    for name in RECIPES:
        if name not in built:
            built[name] = build(name, root, force=force and name in todo)
    return {name: built[name] for name in RECIPES}


# Relative training cost (CPU seconds measured on one core), to start the longest builds first.
_COST = {"healthy": 26, "perception_length": 12, "causal_leak": 6, "early_stop": 4, "eval_overlap": 4}


def _recipe_key(name: str) -> str:
    recipe = {"version": RECIPE_VERSION, **RECIPES[name]}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def is_cached(name: str, root: str | Path) -> bool:
    folder = Path(root) / name
    try:
        meta = json.loads((folder / "scenario.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("recipe_key") == _recipe_key(name) and (folder / "run").is_dir()


def _scenario(name: str, folder: Path, seconds: float, cached: bool, info: dict) -> Scenario:
    layer, codes, fault = EXPECTED[name]
    factory = CAUSAL_LEAK_FACTORY if name == "causal_leak" else None
    return Scenario(name, folder / "run", folder / "train.jsonl", folder / "eval.jsonl", factory,
                    layer, codes, fault, round(seconds, 2), cached, info)


@contextlib.contextmanager
def quiet_training(threads: int = 1) -> Iterator[io.StringIO]:
    """Silence training: the Trainer's printed log dicts and progress bars, transformers' and
    datasets' logging and warnings; and train on `threads` CPU threads. Restores everything."""
    import torch
    import datasets
    import transformers
    buf = io.StringIO()
    old_threads = torch.get_num_threads()
    tf_level = transformers.logging.get_verbosity()
    tf_bars = transformers.utils.logging.is_progress_bar_enabled()
    ds_bars = datasets.utils.logging.is_progress_bar_enabled()
    ds_level = datasets.logging.get_verbosity()
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.logging.set_verbosity_error()
    datasets.utils.logging.disable_progress_bar()
    old_disable = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        logging.disable(old_disable)
        torch.set_num_threads(old_threads)
        transformers.logging.set_verbosity(tf_level)
        if tf_bars:
            transformers.utils.logging.enable_progress_bar()
        datasets.logging.set_verbosity(ds_level)
        if ds_bars:
            datasets.utils.logging.enable_progress_bar()


# ---- data --------------------------------------------------------------------------------------
def _copy_data(r: dict[str, Any], seed: int = 1) -> tuple[list[dict], list[dict]]:
    """Train rows and eval rows of the copy task; no eval input occurs in the train data."""
    train = copy_rows(r["n_train"], vocab=COPY_VOCAB, min_k=r["train_k"][0], max_k=r["train_k"][1],
                      seed=seed)
    seen = {tuple(row["input_ids"]) for row in train}
    pool = copy_rows(4 * r["n_eval"], vocab=COPY_VOCAB, min_k=r["eval_k"][0], max_k=r["eval_k"][1],
                     seed=seed + 1000)
    evals, taken = [], set()
    for row in pool:
        key = tuple(row["input_ids"])
        if key not in seen and key not in taken:
            taken.add(key)
            evals.append(row)
        if len(evals) == r["n_eval"]:
            break
    return train, evals


def _write_data(folder: Path, train: list[dict], evals: list[dict]) -> None:
    from degrade.bench.train import write_jsonl
    write_jsonl(train, folder / "train.jsonl")
    write_jsonl(evals, folder / "eval.jsonl")


def _train_hf(folder: Path, model, train: list[dict], evals: list[dict], r: dict[str, Any],
              on_step) -> dict[str, Any]:
    from degrade.bench.train import train_hf
    train_hf(folder / "run", model, train, evals, max_steps=r["max_steps"], lr=r["lr"],
             batch_size=r["batch_size"], weight_decay=r["weight_decay"],
             warmup_steps=r["warmup_steps"], eval_steps=r["eval_steps"],
             logging_steps=r["logging_steps"], seed=0,
             lr_scheduler_type=r.get("scheduler", "linear"), callbacks=_step_callbacks(on_step))
    return _final_eval(folder / "run")


def _step_callbacks(on_step: Callable[[int, int], None] | None) -> list | None:
    """A Trainer callback reporting each step to on_step (for a progress display)."""
    if on_step is None:
        return None
    import transformers

    class StepCallback(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            on_step(state.global_step, state.max_steps)
    return [StepCallback()]


def _final_eval(run_dir: Path) -> dict[str, Any]:
    state = json.loads((run_dir / "trainer_state.json").read_text(encoding="utf-8"))
    evals = [rec for rec in state["log_history"] if "eval_loss" in rec]
    last = evals[-1] if evals else {}
    train = [rec["loss"] for rec in state["log_history"] if "loss" in rec]
    return {"eval_loss": _r(last.get("eval_loss")), "eval_accuracy": _r(last.get("eval_accuracy")),
            "train_loss_last": _r(train[-1]) if train else None, "global_step": state.get("global_step")}


def _r(x):
    return None if x is None else round(float(x), 4)


# ---- the five scenarios ------------------------------------------------------------------------
CAUSAL_LEAK_FACTORY = "degrade.bench.scenarios:causal_leak_model"


def causal_leak_model(config: dict):
    """--model-factory for the causal_leak run: the TinyGPT its Recorder params describe.

    degrade calls a factory with the run's recorded params only when its first parameter is
    required (degrade/run/load.py), which degrade.bench.tiny_gpt:build's optional `config` is
    not: called bare, build() would give a correctly masked model and the leak would vanish."""
    from degrade.bench.tiny_gpt import build
    return build(config)


def _healthy(folder: Path, r: dict[str, Any], on_step) -> dict[str, Any]:
    from degrade.bench.train import tiny_gpt2
    train, evals = _copy_data(r)
    _write_data(folder, train, evals)
    return _train_hf(folder, tiny_gpt2(COPY_VOCAB + 1), train, evals, r, on_step)


def _early_stop(folder: Path, r: dict[str, Any], on_step) -> dict[str, Any]:
    return _healthy(folder, r, on_step)  # same data and model; the recipe stops it early


def _eval_overlap(folder: Path, r: dict[str, Any], on_step) -> dict[str, Any]:
    """Modular addition on half of all (a, b) pairs, no weight decay: the model memorises its
    training pairs (no grokking in this many steps). Half of the eval rows are training rows."""
    from degrade.bench.train import tiny_gpt2
    p = r["p"]
    train, held_out = modular_addition_rows(p=p, train_fraction=r["train_fraction"], seed=0)
    n_eval = len(held_out)
    n_copied = int(round(n_eval * r["overlap_fraction"]))
    rng = np.random.default_rng(0)
    copied = [train[i] for i in rng.choice(len(train), size=n_copied, replace=False)]
    evals = copied + held_out[:n_eval - n_copied]
    order = rng.permutation(len(evals))
    evals = [evals[i] for i in order]
    _write_data(folder, train, evals)
    return _train_hf(folder, tiny_gpt2(p + 1, n_positions=8), train, evals, r, on_step)


def _perception_length(folder: Path, r: dict[str, Any], on_step) -> dict[str, Any]:
    from degrade.bench.train import tiny_gpt2
    train, evals = _copy_data(r)
    _write_data(folder, train, evals)
    return _train_hf(folder, tiny_gpt2(COPY_VOCAB + 1, n_positions=r["n_positions"]), train, evals,
                     r, on_step)


def _causal_leak(folder: Path, r: dict[str, Any], on_step) -> dict[str, Any]:
    """TinyGPT with causal=False, trained in a plain PyTorch loop recorded by degrade.Recorder.

    The Recorder keeps the model's constructor arguments as `params`, so the factory
    causal_leak_model rebuilds the same (leaky) model from them."""
    import torch
    from torch.nn import functional as F

    from degrade.bench.tiny_gpt import TinyGPT
    from degrade.bench.train import Collator
    from degrade.record.recorder import Recorder

    train, evals = _copy_data(r)
    _write_data(folder, train, evals)
    torch.manual_seed(0)
    model = TinyGPT(r["model"])
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
    steps, warm = r["max_steps"], r["warmup_steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1.0 - s / steps))
    collate, bs = Collator(), r["batch_size"]
    rng = np.random.default_rng(0)
    order, cursor = rng.permutation(len(train)), 0
    eval_batch = collate(evals)
    info: dict[str, Any] = {}
    with Recorder(folder / "run", params={"model": r["model"]}, seed=0, task="causal-lm",
                  model=model, optimizer=opt, train_data=str(folder / "train.jsonl"),
                  eval_data=str(folder / "eval.jsonl"), factory=CAUSAL_LEAK_FACTORY,
                  max_steps=steps, every=20) as rec:
        losses = []
        for step in range(1, steps + 1):
            if cursor + bs > len(order):
                order, cursor = rng.permutation(len(train)), 0
            batch = collate([train[i] for i in order[cursor:cursor + bs]])
            cursor += bs
            model.train()
            logits = model(batch["input_ids"], batch["attention_mask"])
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                                   ignore_index=IGNORE)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            lr = sched.get_last_lr()[0]
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(float(loss))
            if on_step is not None:
                on_step(step, steps)
            if step % r["logging_steps"] == 0:
                rec.log(step, loss=float(np.mean(losses)), lr=lr, grad_norm=float(grad_norm),
                        epoch=step * bs / len(train))
                losses = []
            if step % r["eval_steps"] == 0 or step == steps:
                info = _eval_plain(model, eval_batch)
                rec.log_eval(step, loss=info["eval_loss"],
                             metrics={"accuracy": info["eval_accuracy"]},
                             per_example=info.pop("per_example"), epoch=step * bs / len(train))
        rec.save_checkpoint(model, steps)
    info["global_step"] = steps
    return info


def _eval_plain(model, batch) -> dict[str, Any]:
    """Token-pooled eval loss and accuracy (as the Trainer's would be), plus per-example scores."""
    import torch
    from torch.nn import functional as F
    model.eval()
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"])[:, :-1]
    target = batch["labels"][:, 1:]
    valid = target != IGNORE
    nll = F.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none") * valid
    hit = (logits.argmax(-1) == target) & valid
    n = valid.sum(1).clamp(min=1)
    return {"eval_loss": round(float(nll.sum() / valid.sum()), 6),
            "eval_accuracy": round(float(hit.sum() / valid.sum()), 6),
            "per_example": {"loss": (nll.sum(1) / n).tolist(), "correct": (hit.sum(1) / n).tolist()}}


_BUILDERS: dict[str, Callable[[Path, dict[str, Any], Any], dict[str, Any]]] = {
    "healthy": _healthy,
    "eval_overlap": _eval_overlap,
    "early_stop": _early_stop,
    "causal_leak": _causal_leak,
    "perception_length": _perception_length,
}


def main(argv: list[str] | None = None) -> int:
    """python -m degrade.bench.scenarios ROOT [NAME ...]: build (and time) scenarios."""
    import resource
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m degrade.bench.scenarios ROOT [NAME ...] [--force]", file=sys.stderr)
        return 2
    force = "--force" in argv
    argv = [a for a in argv if a != "--force"]
    root, wanted = Path(argv[0]), argv[1:] or names()
    for name in wanted:
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        s = build(name, root, force=force)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        print(json.dumps({"name": s.name, "wall_s": s.build_seconds, "cpu_s": round(cpu, 2),
                          "cached": s.cached, **s.info}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
