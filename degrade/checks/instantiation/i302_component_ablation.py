"""I302 component-ablation: heads and MLPs that contribute nothing (or everything)."""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch

from degrade.check import Check, CheckSkipped
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.ablation import head_weight_is_zero
from degrade.engine import MIN_PROBE_ROWS
from degrade.probing.ablation_probe import MAX_LEN, AblationProbe
from degrade.probing.attribution import attribute
from degrade.probing.components import Component
from degrade.run.data import IGNORE_INDEX
from degrade.run.tasks import CAUSAL_LM
from degrade.stats import num


def _layers_text(labels: list[str], limit: int = 12) -> str:
    return ", ".join(labels[:limit]) + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


class ComponentAblation(Check):
    """Heads or MLPs that cannot contribute (a bug), contribute nothing measurable, or everything.

    What it detects: the effect of ablating each attention head and each MLP block alone (zero
    ablation: the head's slice of the input to its attention output projection, or the MLP's
    output, set to 0): the eval loss increase Δ and the largest logit change (relative to the logit
    scale). When the budget pays for one probe forward per component, every component is ablated
    exactly on a probe batch drawn from the engine's eval sample. Otherwise all are ranked by
    attribution patching (one forward + backward over the attribution sample: each target's
    log-odds m moves by about d = g · (r − a) for activation a, the gradient g of m and the
    ablation's reference r, and the loss by softplus(−(m + d)) − softplus(−m); Nanda 2023, and
    the head-importance score of Michel et al. 2019), the lowest- and highest-ranked
    budget.confirm_components are ablated exactly, and the Spearman agreement of estimate and exact
    values is in the evidence; components whose activation received no gradient at all are ablated
    exactly (all together first): an output that reaches no logit.
      - cannot contribute (error): a head or MLP whose output is exactly 0 on every real token, a
        head read by all-zero output-projection weights, or a component (or a whole layer's heads
        ablated at once) whose removal changes no logit beyond float noise. A trained component
        is never exactly inert by itself: code is switching it off or its output never reaches
        the logits (a dead-head list, a head_mask, an attention output that is not added to the
        residual stream). This is how a bug is told from a healthy model's unused heads: those
        still move the logits a little.
      - dead (warning): Δ + 2 standard errors <= dead_fraction * G, where G = trivial loss - model
        loss is what the model gained over an input-blind predictor (the unigram distribution of
        the sample's targets for an LM, the class prior for a classifier). Wasteful, cost not shown
        (DESIGN.md: a dead head in a model that works is a warning). When all heads of a layer (or
        of the model) are dead, the group is ablated at once: if it matters jointly the heads are
        redundant; if it too is negligible the message says the layer contributes almost nothing.
      - carrying (info): Δ >= carry_fraction * G: a single component holds most of what the model
        learned; not a fault in itself.
      - harmful (info): Δ + 2 standard errors < -dead_fraction * G: removing it helps.
    When G < min_gain_fraction * trivial loss (the model is hardly better than the trivial
    predictor), loss changes say nothing about which components matter: only the
    cannot-contribute tests are made.

    Why it matters: a head disabled by a bug is capacity the architecture promises and the code does
    not deliver; many dead heads in a working model are wasted compute (prune them or shrink the
    model).

    Evidence used: the model and the eval data. Per head/MLP: the max |output| over the engine's eval
    sample (its shared pass), the output-projection weights that read it, the token-weighted mean
    loss change with its standard error (from per-example paired differences, exact or estimated),
    and the max logit change on the probe batch; the base and trivial losses.
    Caveat: a classifier whose loss is saturated (~0) shows small loss changes for every ablation;
    the logit test is unaffected.

    Fix: components that cannot contribute: find the code that zeroes, masks, prunes or bypasses
    them and remove it, then retrain. Dead heads in a working model: prune them, or use fewer heads
    or a smaller model.
    """

    code, name, layer = "I302", "component-ablation", Layer.INSTANTIATION
    needs = frozenset({"model", "eval_data"})
    requires_learning = True  # degrade/learned.py: skipped while the model has not learned
    probes = 1
    options = (
        Option("dead_fraction", 0.002,
               source="DegradeBench v1 (the hand-built cases used in development; tiny models): a "
                      "trained GPT-2 copy model's heads that matter cost 0.14-0.42 nats of a 2.2 gain, "
                      "its unused heads 0.0016 or less. Head-pruning work (Michel et al. 2019, "
                      "ANCHORS.md) shows many heads can be removed alone at little cost, which is why a "
                      "dead head in a working model is only a warning",
               help='A loss change confidently (by se_multiple SEs) below this fraction of G is "dead".'),
        Option("carry_fraction", 0.5,
               source='design choice: "most" of what the model gained over a trivial predictor',
               help='A loss change above this fraction of G is "carrying" (info).'),
        Option("min_gain_fraction", 0.05,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.025) and doubled (0.1) give the same "
                      "verdicts and error codes",
               help="G must exceed this fraction of the trivial loss for the loss readings (dead, "
                    "carrying, harmful) to be made."),
        Option("se_multiple", 2.0,
               source="statistical convention: about a two-sided 95% interval (1.96 SE)",
               help='Standard errors of the loss change that must clear the threshold for "dead" '
                    '(change + this many SE <= dead_fraction * G) and "harmful".'),
        Option("effect_tol", 1e-6,
               source="design choice: float32 noise is ~1e-7 of the logit scale",
               help="A removal whose max logit change is below this fraction of the logit scale "
                    "changes nothing (the component cannot contribute)."),
        Option("half_precision_factor", 1000,
               source="design choice: float16/bfloat16 round far more coarsely than float32 (bfloat16 "
                      "keeps 8 significant bits, float32 24); the factor is chosen by hand",
               help="Half-precision models (float16, bfloat16) use this multiple of effect_tol."),
        Option("probe_examples", 8,
               source="design choice: bounds the cost (the budget's probe share sizes it); the number "
                      "is chosen by hand",
               help="At most this many examples in the probe batch when attribution ranks the "
                    "components (truncated to 128 tokens)."),
        Option("mode", "zero",
               source="design choice: zero ablation, one of the zero / mean / resample ablations "
                      "ANCHORS.md lists; a method, not a threshold",
               help="\"zero\" or \"mean\" ablation (mean: the component's mean output over the sample, "
                    "which removes only what it says about each input)."),
    )

    def run(self, run):
        o = self.opts
        model, data = run.model(), run.eval_data
        seen = run.engine.eval_pass()
        comps, stats = seen.captures["components"]
        if not comps:
            raise CheckSkipped(f"no heads or MLPs found: {comps.reason}")
        base = seen.scores
        param = next(model.module.parameters(), None)
        half = param is not None and param.dtype in (torch.float16, torch.bfloat16)
        tol = o["effect_tol"] * (o["half_precision_factor"] if half else 1)

        # 1. Exactly inert: output 0 on every real token, or all-zero weights reading the head.
        zero_out = [c for c in comps.all if stats.called(c) and stats.max_abs[(c.module_name, c.head)] == 0.0]
        zero_w = [c for c in comps.heads if c not in zero_out and head_weight_is_zero(model.module, c)]
        never = sorted({c.module_name for c in comps.all if not stats.called(c)})
        candidates = [c for c in comps.all if c not in zero_out and stats.called(c)]
        means = stats.means() if o["mode"] == "mean" else None

        # 2. Exact ablation of every candidate when the budget pays for it (one probe forward
        # each); else every candidate ranked by attribution patching (one forward + backward) and
        # only the extremes ablated exactly (first-order estimates miss large, nonlinear effects:
        # docs/benchmarks.md, "Attribution vs exact ablation").
        k = max(2, int(run.budget.confirm_components))
        forwards = len(candidates) + 1 + k // 2  # each candidate, the probe's own, the groups
        per_row = max(1.0, float(np.mean([min(len(data.input_ids[int(i)]), MAX_LEN) for i in base.indices])))
        affordable = forwards * MIN_PROBE_ROWS * per_row <= run.budget.attribution_passes * run.engine.pass_tokens()
        if affordable:
            rows = run.engine.subsample(base.indices, run.budget.attribution_passes / forwards)
            attr, est, confirm = None, {}, [c for c in candidates if c not in zero_w]
        else:
            rows = run.engine.subsample(base.indices, run.budget.attribution_passes / 3)
            attr = attribute(model, data, rows, candidates, means=means, meter=run.meter)
            est = {c: attr.delta(c) for c in candidates}
        no_grad = [c for c in candidates if attr is not None and attr.grad_max[c] == 0.0 and c not in zero_w]
        if attr is not None:
            ranked = sorted([c for c in candidates if c not in no_grad and c not in zero_w], key=lambda c: est[c][0])
            confirm = list(dict.fromkeys(ranked[: k // 2] + ranked[::-1][: k - k // 2]))
            rows = run.engine.subsample(rows, run.budget.probe_passes / (2 + len(confirm) + k // 2))
        probe = AblationProbe(model, data, rows if affordable else rows[: max(int(o["probe_examples"]), 1)], run.meter)
        if affordable:  # every candidate gets its exact effect: the no-effect test covers them all
            exact = {c: probe.ablated([c], o["mode"], means) for c in confirm}
            effect = {c: e for c, (e, _) in exact.items()}
            no_effect = [c for c in confirm if effect[c] <= tol]
        else:
            effect, no_effect = self._inert(probe, no_grad, o["mode"], means, tol)
            exact = {c: probe.ablated([c], o["mode"], means) for c in confirm}
        agreement = None
        if attr is not None:
            position = np.searchsorted(attr.indices, probe.indices)
            agreement = _spearman([attr.delta(c, position)[0] for c in confirm], [exact[c][1][0] for c in confirm])

        triv = self._trivial_loss(model.task, data, base.indices)
        gain = triv - base.token_mean_loss
        ev: dict[str, Any] = {"examples": int(base.n), "base_loss": num(base.token_mean_loss),
                              "trivial_loss": num(triv), "gain": num(gain),
                              "components": comps.describe(), "mode": o["mode"],
                              "ablated_exactly": len(exact), "estimated_by_attribution":
                                  0 if attr is None else len(candidates) - len(exact),
                              "attribution_examples": 0 if attr is None else int(attr.indices.size),
                              "probe_examples": probe.n, "effect_tol": tol,
                              "spearman_estimate_vs_exact": num(agreement, 3)}
        if never:
            ev["modules_never_called"] = never[:8]
        findings = []
        inert = zero_out + zero_w + no_effect
        if inert:
            findings.append(self._inert_finding(comps, zero_out, zero_w, no_effect, effect, ev))

        if gain < o["min_gain_fraction"] * triv:
            if findings:
                return findings
            return [self.finding(
                "info", f"The model is hardly better than a trivial predictor (loss "
                        f"{ev['base_loss']} vs {ev['trivial_loss']}), so ablation cannot tell which "
                        f"components matter; every head and MLP does change the logits.",
                confidence=0.5, evidence=ev,
                next_experiment="Settle the reachability layer first (train until the eval loss "
                                "is clearly below the trivial loss), then rerun I302.")]

        # 4. Loss changes: exact where confirmed, estimated elsewhere.
        live = [c for c in candidates if c not in no_effect and c not in zero_w]
        deltas = {c: exact[c][1] if c in exact else est[c] for c in live}
        thresh = o["dead_fraction"] * gain
        k_se = o["se_multiple"]

        def is_dead(d: tuple[float, float]) -> bool:
            return d[0] + k_se * d[1] <= thresh  # confidently below the threshold

        dead = [c for c in live if is_dead(deltas[c])]
        carry = [c for c in live if deltas[c][0] >= o["carry_fraction"] * gain]
        harmful = [c for c in live if deltas[c][0] + k_se * deltas[c][1] < -thresh]
        top = sorted(deltas.items(), key=lambda kv: -kv[1][0])[:32]
        ev["delta_loss"] = {c.label: num(d[0], 3) for c, d in top}
        ev["delta_loss_se"] = {c.label: num(d[1], 2) for c, d in top}
        ev["dead_threshold"] = num(thresh, 3)

        # 5. Whole groups whose members are all dead or inert: ablate the group at once (exact).
        group_info = []
        for what, members in self._groups(comps, candidates, set(dead) | set(inert), set(inert), zero_out)[: k // 2 or 1]:
            eff, d = probe.ablated(members, o["mode"], means)
            kind = "inert" if eff <= tol else ("negligible" if is_dead(d) else "redundant")
            group_info.append({"group": what, "components": len(members), "joint_delta_loss": num(d[0], 3),
                               "joint_logit_change": num(eff, 3), "reading": kind})
        if group_info:
            ev["groups"] = group_info
        findings += self._readings(ev, group_info, dead, live, carry, harmful, deltas)
        return findings

    @staticmethod
    def _inert(probe, no_grad, mode, means, tol):
        """{component: logit effect} and the inert ones among those that received no gradient:
        ablated together first (one forward settles them all when the joint change is nil)."""
        if not no_grad:
            return {}, []
        joint, _ = probe.ablated(no_grad, mode, means)
        if joint <= tol:
            return {c: joint for c in no_grad}, list(no_grad)
        effect = {c: probe.ablated([c], mode, means)[0] for c in no_grad}
        return effect, [c for c in no_grad if effect[c] <= tol]

    @staticmethod
    def _groups(comps, candidates, weak, inert, zero_out) -> list[tuple[str, list[Component]]]:
        groups: list[tuple[str, list[Component]]] = []
        heads = [c for c in candidates if c.kind == "head"]
        if len(heads) > 1 and all(c in weak for c in heads) and not all(c in inert for c in heads):
            groups.append(("all heads of the model", [c for c in comps.heads if c not in zero_out]))
        else:
            for a in comps.attention:
                members = [c for c in heads if c.layer == a.layer]
                if len(members) > 1 and all(c in weak for c in members) and not all(c in inert for c in members):
                    groups.append((f"all heads of attention layer {a.layer} ({a.module_name})",
                                   [c for c in comps.layer_heads(a.layer) if c not in zero_out]))
        mlps = [c for c in candidates if c.kind == "mlp"]
        if len(mlps) > 1 and all(c in weak for c in mlps):
            groups.append(("all MLP blocks", [c for c in comps.mlps if c not in zero_out]))
        return groups

    def _readings(self, ev, group_info, dead, live, carry, harmful, deltas) -> list:
        o = self.opts
        findings = []
        inert_groups = [g for g in group_info if g["reading"] == "inert"]
        if inert_groups:
            g = inert_groups[0]
            findings.append(self.finding(
                "error",
                f"Ablating {g['group']} at once changes no logit (max change {g['joint_logit_change']} "
                f"of the logit scale): these {g['components']} components never reach the output. "
                f"Their output is probably not added to the residual stream.",
                confidence=0.85, evidence=ev,
                fix="Check that each block adds its attention (and MLP) output to the residual "
                    "stream and that nothing overwrites or masks it; then retrain.",
                next_experiment="Print the attention output's norm and the residual stream before "
                                "and after each block on one batch, and the gradient norm of the "
                                "layer's weights after one backward pass: zero means no path."))
        if dead:
            red = [g["group"] for g in group_info if g["reading"] == "redundant"]
            negl = [g["group"] for g in group_info if g["reading"] == "negligible"]
            tail = ""
            if red:
                tail += f" Ablated together, {', '.join(red)} do matter: redundant rather than useless."
            if negl:
                tail += (f" Even ablated together, {', '.join(negl)} change the loss by less than the "
                         f"threshold: that part of the model contributes almost nothing (if the task "
                         f"needs it, look for code that weakens it).")
            findings.append(self.finding(
                "warning",
                f"{len(dead)} of {len(live)} components change the eval loss by less than "
                f"{ev['dead_threshold']} nats ({o['dead_fraction']:.1%} of what the model gained over a "
                f"trivial predictor; estimated by attribution, the extremes confirmed by ablation): "
                f"{_layers_text([c.label for c in dead])}." + tail,
                confidence=0.6 if not negl else 0.7,
                evidence={**ev, "dead": [c.label for c in dead][:32], "dead_count": len(dead)},
                fix="Prune these components or use fewer heads / a smaller model; if they should "
                    "matter, look for code that bypasses them.",
                next_experiment="Retrain with those heads pruned (or fewer heads) and compare the "
                                "eval loss: no change confirms they are wasted."))
        if carry:
            findings.append(self.finding(
                "info",
                f"{_layers_text([c.label for c in carry])} "
                f"{'carries' if len(carry) == 1 else 'each carry'} at least "
                f"{o['carry_fraction']:.0%} of the model's gain over a trivial predictor: "
                f"removing one alone costs up to {num(max(deltas[c][0] for c in carry), 3)} nats.",
                confidence=0.6, evidence={**ev, "carrying": [c.label for c in carry]},
                next_experiment="Not a fault: a small model may rely on one head. Check its "
                                "attention pattern if the task should need several."))
        if harmful:
            findings.append(self.finding(
                "info", f"Removing {_layers_text([c.label for c in harmful])} lowers the eval loss.",
                confidence=0.5, evidence={**ev, "harmful": [c.label for c in harmful]},
                next_experiment="Check for overfitting (R202) before pruning them."))
        return findings

    # ---- helpers -----------------------------------------------------------------------------
    def _inert_finding(self, comps, zero_out, zero_w, no_effect, effect, ev):
        items = zero_out + zero_w + no_effect
        labels = [c.label for c in items]
        n_heads = len([c for c in items if c.kind == "head"])
        whole = [a.layer for a in comps.attention if all(c in items for c in comps.layer_heads(a.layer))]
        how = []
        if zero_out:
            how.append(f"{len(zero_out)} output exactly 0 on every token")
        if zero_w:
            how.append(f"{len(zero_w)} are read by all-zero output-projection weights")
        if no_effect:
            how.append(f"removing {len(no_effect)} changes no logit")
        pruned = " (all-zero weights can also be a deliberate pruning)" if zero_w and not (zero_out or no_effect) else ""
        fev = {**ev, "zero_output": [c.label for c in zero_out][:64],
               "zero_weights": [c.label for c in zero_w][:64],
               "no_logit_effect": {c.label: num(effect[c], 3) for c in no_effect[:64]},
               "inert_heads": n_heads, "total_heads": len(comps.heads), "layers_entirely_inert": whole}
        return self.finding(
            "error",
            f"{len(labels)} component(s) cannot contribute at all ({'; '.join(how)}): "
            f"{_layers_text(labels)}; {n_heads} of {len(comps.heads)} heads. A trained component is "
            f"never exactly inert by itself: code is switching it off{pruned}.",
            confidence=0.95 if zero_out or no_effect else 0.7, evidence=fev,
            fix="Find the code that zeroes, masks, prunes or bypasses these components (a head_mask, "
                "a dead-head list, a wrong slice in the head split/merge, an output never added to "
                "the residual stream) and remove it; then retrain.",
            next_experiment="Run one batch with a hook on the attention output projection and "
                            "print each head's slice norm; then read the attention forward for "
                            "where those heads are overwritten.")

    @staticmethod
    def _trivial_loss(task: str, data, indices: np.ndarray) -> float:
        """Entropy of the sample's targets: the loss of the best input-blind predictor."""
        if task == CAUSAL_LM:
            counts: Counter = Counter()
            for i in indices:
                lab = data.token_labels(int(i))[1:]
                counts.update(t for t in lab if t != IGNORE_INDEX)
        else:
            counts = Counter(data.label[int(i)] for i in indices)
        total = sum(counts.values())
        if not total:
            raise CheckSkipped("the sampled eval examples have no targets")
        p = np.asarray(list(counts.values()), dtype=float) / total
        return float(-(p * np.log(p)).sum())


def _spearman(a: list[float], b: list[float]) -> float | None:
    """Rank correlation of the estimated and the exact effects (None with fewer than 3)."""
    if len(a) < 3:
        return None
    from scipy.stats import spearmanr
    r = spearmanr(a, b).statistic
    return float(r) if np.isfinite(r) else None
