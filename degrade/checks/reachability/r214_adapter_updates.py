"""R214 adapter-updates: did training reach a PEFT adapter, and how much of its rank does it use?"""
from __future__ import annotations

import math
from typing import Any

import torch

from degrade.check import Check, CheckSkipped
from degrade.layers import Layer
from degrade.stats import num


class AdapterUpdates(Check):
    """A PEFT (LoRA) adapter that training never moved, or moved only in part.

    What it detects: for each adapted module, the LoRA update dW = s * B A (s = lora_alpha / r, or
    lora_alpha / sqrt(r) with rsLoRA), read from the adapter's own tensors:
      - B exactly zero: LoRA initialises B to zero so that training starts from the base model
        (Hu et al. 2021, LoRA, section 4.1); an exactly zero B after training means no gradient
        step ever reached it (the adapter was not in the optimiser, its modules were frozen, or the
        saved adapter is the untrained one). Every adapted module at zero is an error: the run
        trained nothing; some of them a warning;
      - with two or more checkpoints that hold adapters, adapter tensors identical in the first and
        the last: the same reading over the run (R204's frozen-parameter test, on the adapter);
      - the size of each update against the base weight it adds to (||dW|| / ||W||, Frobenius), and
        how many of its r directions it uses: the effective rank exp(H(p)) of its singular values
        (p = s_i / sum s; Roy & Vetterli 2007, "The effective rank"). Evidence, never a verdict:
        a small task can need a rank-1 update.
    Why it matters: a fine-tune whose adapter did not train evaluates the base model; its metrics
    say nothing about the fine-tuning recipe.

    Evidence used: the adapter's tensors and config (adapter_model.safetensors, adapter_config.json),
    the merged model's weights, earlier checkpoint-N/ adapters.

    Fix: check that the adapter's parameters are trainable and in the optimiser
    (model.print_trainable_parameters() before training), that target_modules names modules the
    model has, and that the adapter saved is the trained one.
    """

    code, name, layer = "R214", "adapter-updates", Layer.REACHABILITY
    needs = frozenset({"model"})
    tasks = frozenset({"causal-lm", "sequence-classification", "seq2seq"})

    def run(self, run):
        handle = run.model()
        adapter = handle.adapter
        if adapter is None:
            raise CheckSkipped("the model is not a PEFT adapter")
        cfg = adapter.config
        if str(cfg.get("peft_type", "")).upper() != "LORA":
            raise CheckSkipped(f"reads LoRA adapters; this one is {cfg.get('peft_type')}")
        pairs = _lora_pairs(adapter.tensors)
        if not pairs:
            raise CheckSkipped("the adapter holds no lora_A/lora_B pairs")
        weights = handle.module.state_dict()
        rows, zero = [], []
        for module, (a, b) in sorted(pairs.items()):
            r = a.shape[0]
            scale = float(cfg.get("lora_alpha", r)) / (math.sqrt(r) if cfg.get("use_rslora") else r)
            delta = scale * (b.double() @ a.double())
            if not torch.any(b != 0):
                zero.append(module)
            sv = torch.linalg.svdvals(delta)
            merged = weights.get(f"{module}.weight")
            ratio = None
            if merged is not None and merged.numel() == delta.numel():
                # the merged weight is W0 + dW (transposed for fan_in_fan_out layers such as GPT-2's Conv1D)
                d = delta if merged.shape == delta.shape else delta.T
                w0 = float((merged.double() - d).norm()) if merged.shape == d.shape else 0.0
                ratio = float(delta.norm()) / w0 if w0 > 0 else None
            rows.append({"module": module, "rank": int(r), "update_norm": num(float(delta.norm()), 4),
                         "update_over_base": num(ratio, 4), "effective_rank": num(_effective_rank(sv), 3)})
        unchanged = _unchanged_over_run(run, adapter)
        ev: dict[str, Any] = {"peft_type": cfg.get("peft_type"), "r": cfg.get("r"),
                              "lora_alpha": cfg.get("lora_alpha"), "target_modules": cfg.get("target_modules"),
                              "adapted_modules": len(rows), "modules": rows[:40],
                              "b_exactly_zero": zero[:20], "n_b_exactly_zero": len(zero)}
        if unchanged is not None:
            ev.update(unchanged)
        frozen = len(zero) == len(rows) or (unchanged is not None and unchanged["unchanged_fraction"] == 1.0)
        fix = ("Make the adapter's parameters trainable and put them in the optimiser "
               "(print_trainable_parameters() before training); check that target_modules names "
               "modules the model has and that the adapter saved is the trained one.")
        if frozen:
            return [self.finding(
                "error", f"The adapter never trained: {len(zero)} of {len(rows)} LoRA modules still have "
                f"B exactly zero, their initial value" + (f", and {unchanged['unchanged']} of "
                f"{unchanged['compared']} adapter tensors are identical at steps {unchanged['steps'][0]} "
                f"and {unchanged['steps'][1]}" if unchanged else "") + ". The run evaluated the base model.",
                confidence=0.95, evidence=ev, fix=fix,
                next_experiment="Train 10 steps and compare the adapter's tensors with their initial "
                                "values: they must move.")]
        if zero:
            return [self.finding(
                "warning", f"{len(zero)} of {len(rows)} LoRA modules never trained (B exactly zero, "
                f"its initial value): {', '.join(zero[:3])}{' ...' if len(zero) > 3 else ''}.",
                confidence=0.7, evidence=ev, fix=fix)]
        ratios = [row["update_over_base"] for row in rows if row["update_over_base"] is not None]
        ranks = [row["effective_rank"] for row in rows]
        return [self.finding(
            "info", f"The LoRA adapter trained: {len(rows)} modules, update/base norm median "
            f"{num(_median(ratios), 3) if ratios else 'n/a'}, effective rank median "
            f"{num(_median(ranks), 3)} of r={rows[0]['rank']}.", confidence=0.9, evidence=ev)]


def _lora_pairs(tensors: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module path (as in the merged model) -> (A [r, in], B [out, r])."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key and t.ndim == 2:
                module = key.split(marker)[0].removeprefix("base_model.model.")
                found.setdefault(module, {})[part] = t
    return {m: (d["lora_A"], d["lora_B"]) for m, d in found.items() if len(d) == 2}


def _effective_rank(sv: torch.Tensor) -> float:
    total = float(sv.sum())
    if total <= 0:
        return 0.0
    p = (sv / total).clamp(min=1e-300)
    return float(torch.exp(-(p * p.log()).sum()))


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _unchanged_over_run(run, adapter) -> dict[str, Any] | None:
    """Adapter tensors identical in the earliest checkpoint's adapter and the chosen one's."""
    from degrade.run.weights_file import open_weights
    earlier = [c for c in run.checkpoints if c.adapter is not None and c.path != adapter.path.parent]
    ckpt = run.model_checkpoint
    earlier = [c for c in earlier if c.step < ckpt.step]
    if not earlier:
        return None
    first = open_weights(earlier[0].adapter, run.path)
    names = [n for n in adapter.tensors if n in first]
    same = sum(bool(torch.equal(first[n], adapter.tensors[n])) for n in names)
    return {"compared": len(names), "unchanged": same, "steps": [earlier[0].step, ckpt.step],
            "unchanged_fraction": round(same / len(names), 4) if names else 0.0}
