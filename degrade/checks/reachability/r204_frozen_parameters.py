"""R204 frozen-parameters: parameters that never moved from their initialisation."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from degrade.check import Check, CheckSkipped
from degrade.checks.reachability import weights as W
from degrade.layers import Layer
from degrade.option import Option
from degrade.run.layer_stats import read_layer_stats

if TYPE_CHECKING:
    import torch


class FrozenParameters(Check):
    """Parameters that did not move during training: frozen by mistake, or never reached by the
    gradient.

    What it detects: weight tensors that are bit-identical between the earliest weights the run
    kept and its last checkpoint. Three kinds of evidence, whichever the run has:
      - weights: the Recorder's initial snapshot (degrade/initial_weights.safetensors), else the
        earliest of >= 2 checkpoints, against the last checkpoint: ||W_last - W_ref|| == 0;
      - the Recorder's initial-weights digest (a hash of a fixed sample of each tensor) against
        the same hash of the last checkpoint's tensor, for models too large for a snapshot;
      - layers.jsonl: parameters whose update/weight ratio is 0 (or that got no gradient) at every
        recorded step (TheDeepChecker: a ratio of exactly 0 is "untrained", ANCHORS.md);
    and, as corroboration, the last HF checkpoint's optimizer.pt: how many tensors the optimiser
    holds state for against how many the model has (read only with torch.load(weights_only=True);
    skipped when that fails).
      - error: frozen tensors make up >= `min_frozen_fraction` of the parameters and they are
        known to sit at their initialisation: the reference is the initial snapshot or digest, or
        a frozen tensor is constant-valued (a LayerNorm weight of all ones, a bias of all zeros:
        what an initialiser writes and no trained or pretrained model holds);
      - warning: frozen tensors that may be a deliberately frozen pretrained backbone (reference
        is an intermediate checkpoint and no frozen tensor is at a constant init), or below
        `min_frozen_fraction`.

    Why it matters: a frozen layer computes with random weights forever; the model that was
    trained is smaller than the one the architecture describes, so neither its capacity nor its
    design is being tested. Freezing is a one-line mistake (a fine-tuning recipe's
    `requires_grad = False`, an optimizer built before unfreezing, a parameter left out of
    `optimizer.param_groups`).

    Evidence used: checkpoint weights (safetensors, or torch files with weights_only=True), the
    Recorder's initial snapshot/digest and layers.jsonl, optimizer.pt.

    Fix: make the parameters trainable (requires_grad=True) and build the optimizer over
    model.parameters() after any (un)freezing; check that the unused module is meant to be in
    the forward pass at all.
    """

    code, name, layer = "R204", "frozen-parameters", Layer.REACHABILITY
    needs = frozenset()
    options = (
        Option("min_frozen_fraction", 0.01,
               source="design choice: one percent of a model is a whole layer in any real transformer; "
                      "smaller frozen pieces (a single bias) are reported as a warning",
               help="Fraction of all parameters (by element count) frozen at their initialisation for "
                    "an error."),
        Option("max_update_ratio", 0.0,
               source='TheDeepChecker (ANCHORS.md): an update/weight ratio of exactly 0 is "untrained"',
               help="A layers.jsonl update ratio at or below this at every recorded step counts as "
                    "frozen."),
    )

    def run(self, run):
        ckpts = W.with_weights(run)
        ev: dict[str, Any] = {}
        frozen: dict[str, int] = {}  # name -> numel
        at_init = False
        constant: list[str] = []
        total = 0
        sources = []
        last = W.load(ckpts[-1]) if ckpts else None
        ref = W.reference_weights(run)
        if last is not None and ref is not None:
            ref_w, ref_step, source = ref
            if ref_step >= ckpts[-1].step:
                ref = None
            else:
                change = W.relative_change(ref_w, last)
                names = [n for n in W.trainable_names(last) if n in change]
                total = sum(change[n]["numel"] for n in names)
                for n in names:
                    if change[n]["delta"] == 0.0:
                        frozen[n] = change[n]["numel"]
                        if _constant(last[n]):
                            constant.append(n)
                at_init = ref_step == 0
                sources.append(f"weights: {source} (step {ref_step}) vs {ckpts[-1].path.name} "
                               f"(step {ckpts[-1].step})")
                ev["compared_tensors"] = len(names)
        if ref is None and last is not None and (digest := W.initial_digest(run)):
            same = self._digest_same(digest, last)
            total = sum(int(np.prod(d.get("shape") or [0])) for d in digest.values())
            for n, numel in same.items():
                frozen[n] = numel
                if _constant(last[n]):
                    constant.append(n)
            at_init = True
            sources.append("the recorder's initial-weights digest vs the last checkpoint")
        ratio_frozen = self._ratio_frozen(run)
        if ratio_frozen is not None:
            sources.append("layers.jsonl update/weight ratios")
            ev["zero_update_ratio_tensors"] = sorted(ratio_frozen)[:20]
            ev["n_zero_update_ratio_tensors"] = len(ratio_frozen)
            if not frozen and ratio_frozen and last is not None:
                # ratios of 0 but no weights to confirm against: count them, from step 1 on
                for n in ratio_frozen:
                    if n in last:
                        frozen[n] = last.info(n).numel
                total = total or sum(last.info(n).numel for n in last if last.is_float(n))
                at_init = True
        if not sources:
            raise CheckSkipped("no initial weights, digest, per-layer statistics or two checkpoints "
                               "with weights to compare")
        opt = self._optimizer(run, last)
        ev.update(opt)
        ev["evidence_from"] = sources
        if not frozen:
            return []
        n_frozen = sum(frozen.values())
        frac = n_frozen / total if total else 0.0
        modules = _modules(frozen)
        ev.update({"frozen_tensors": sorted(frozen)[:30], "n_frozen_tensors": len(frozen),
                   "frozen_params": n_frozen, "total_params_compared": total,
                   "frozen_fraction": round(frac, 4), "frozen_modules": modules[:15],
                   "constant_valued_frozen_tensors": sorted(constant)[:10]})
        init_known = at_init or bool(constant)
        where = ", ".join(modules[:6]) + (" ..." if len(modules) > 6 else "")
        head = (f"{len(frozen)} parameter tensor(s), {frac:.1%} of the model's parameters "
                f"({n_frozen:,}), never moved during training: {where}")
        if opt.get("optimizer_missing_tensors"):
            head += (f"; the optimiser holds state for {opt['optimizer_tensors']} of "
                     f"{opt['model_tensors']} tensors")
        fix = ("Make them trainable (requires_grad=True) and build the optimizer over "
               "model.parameters() after any (un)freezing; if they are unused in the forward "
               "pass, remove them or wire them in.")
        nxt = (f"Print [n for n, p in model.named_parameters() if not p.requires_grad] and the "
               f"optimizer's param count before training; retrain with {modules[0]} trainable and "
               f"compare the eval loss: a drop beyond the seed noise confirms the cost.")
        if init_known and frac >= self.opts["min_frozen_fraction"]:
            why = ("they are still at their initial values" if at_init else
                   f"{len(constant)} of them still hold an initialiser's constant values "
                   f"(e.g. {constant[0]})")
            return [self.finding("error", f"{head}. {why[0].upper() + why[1:]}: the model trains "
                                 "with random weights in those layers.", confidence=0.85,
                                 evidence=ev, fix=fix, next_experiment=nxt)]
        note = ("" if init_known else " They may be a deliberately frozen pretrained backbone "
                "(the earliest kept weights are not the initialisation); if not, unfreeze them.")
        return [self.finding("warning", f"{head}.{note}", confidence=0.5, evidence=ev, fix=fix,
                             next_experiment=nxt)]

    @staticmethod
    def _digest_same(digest: dict[str, dict], last: W.Weights) -> dict[str, int]:
        from degrade.record.layer_stats import tensor_digest
        same = {}
        for name, d in digest.items():
            t = last.get(name)
            if t is None or not isinstance(d, dict) or list(t.shape) != d.get("shape"):
                continue
            if str(t.dtype).replace("torch.", "") != d.get("dtype"):
                continue  # saved in another dtype: the digest cannot be compared
            if tensor_digest(t) == d.get("digest"):
                same[name] = int(t.numel())
        return same

    def _ratio_frozen(self, run) -> set[str] | None:
        if run.native_dir is None:
            return None
        stats = read_layer_stats(run.native_dir)
        if not stats or len(stats.steps) < 2:
            return None
        out = set()
        for name, cols in stats.params.items():
            r = cols["update_ratio"]
            known = r[np.isfinite(r)]
            no_grad = np.all(~np.isfinite(cols["grad_norm"]))
            if (known.size and np.all(known <= self.opts["max_update_ratio"])) or (no_grad and not known.size):
                out.add(name)
        return out

    @staticmethod
    def _optimizer(run, last) -> dict[str, Any]:
        """The latest checkpoint-N/optimizer.pt (the final model at the root has none)."""
        if last is None:
            return {}
        found = sorted((int(p.parent.name.split("-")[1]), p.parent)
                       for p in run.path.glob("checkpoint-*/optimizer.pt")
                       if p.parent.name.split("-")[1].isdigit())
        count = W.optimizer_tensor_count(found[-1][1]) if found else None
        if count is None:
            return {}
        n_model = len(W.trainable_names(last))
        return {"optimizer_tensors": count, "model_tensors": n_model,
                "optimizer_file": f"{found[-1][1].name}/optimizer.pt",
                "optimizer_missing_tensors": max(n_model - count, 0)}


def _constant(t: torch.Tensor) -> bool:
    """All elements equal (all ones, all zeros): an initialiser's value, never a trained one."""
    import torch
    return t.numel() > 1 and bool(torch.all(t == t.reshape(-1)[0]))


def _modules(frozen: dict[str, int]) -> list[str]:
    """The frozen tensors grouped by their module path, largest first."""
    by: dict[str, int] = {}
    for name, n in frozen.items():
        mod = name.rsplit(".", 1)[0] if "." in name else name
        by[mod] = by.get(mod, 0) + n
    return [m for m, _ in sorted(by.items(), key=lambda t: (-t[1], t[0]))]
