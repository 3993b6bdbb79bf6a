"""R210 attention-entropy: most attention heads collapsed onto single keys (entropy collapse)."""
from __future__ import annotations

from typing import Any

import numpy as np

from degrade.check import Check, CheckSkipped
from degrade.checks.reachability import curves as C
from degrade.checks.reachability import weights as W
from degrade.finding import Severity
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.activations import attention_entropy, probe_batches, run_probe


class AttentionEntropy(Check):
    """Most attention heads have collapsed onto single keys (attention entropy collapse), read
    from the attention probabilities on a sample of sequences.

    What it detects: for every layer and head, the entropy of each query's attention row divided
    by log(n), n the keys that query may attend to (causal models: i + 1 keys for query i;
    padding never counts; rows with a single key are skipped), averaged over rows: 1 is uniform
    attention, 0 one-hot. A head is collapsed when that mean is below `collapsed` (0.05). As a
    scale: a row with 1 - e of its mass on one key and e spread evenly over the others has
    normalised entropy 0.05 at e = 1.8% (n = 16), 2.6% (n = 128), 3.2% (n = 2048); so 0.05 means
    "about 97-98% of the mass on one key, on average". A head splitting evenly between two keys sits at
    log 2 / log n >= 0.09 (n <= 2048), above the cut: sharp-but-shared attention is not counted.
      - info: some heads collapsed (listed). A single sharp head is normal: previous-token,
        induction and attention-sink heads attend to one token by design;
      - warning: at least `most_collapsed` (75%) of all heads collapsed: the model has lost most
        of its ability to mix information across positions;
      - error: that, together with evidence that it hurt training: (a) the training curve was
        unstable (a non-finite train loss, divergence, or loss spikes, as R203 defines them), or
        (b) across the checkpoints kept, the mean entropy fell to <= `fall_ratio` (half) of the
        earliest checkpoint's while the loss on the same probe sequences got worse.
    When most heads are collapsed and the run kept checkpoints, the evidence gives the trajectory
    (mean entropy, collapsed fraction, probe loss) over at most `trajectory_checkpoints` of them
    (earliest, chosen and evenly between; only those up to the chosen one).

    Why it matters: Zhai et al. 2023 ("Stabilizing Transformer Training by Preventing Attention
    Entropy Collapse") find that pathologically low attention entropy goes with unstable training
    (loss spikes, divergence) across vision, speech and language transformers: attention logits
    grow until softmax saturates, gradients through attention vanish, and the model cannot learn
    to attend differently. A collapsed model has not reached what its architecture can do.
    ANCHORS.md: no published threshold exists; the cut-off above is ours, set where a head is
    one-hot for practical purposes, and only "most heads" plus an unstable run makes an error.

    Evidence used: the model (the chosen checkpoint and up to 3 others), the eval data (the
    training data when no eval data is given: entropy needs inputs, not held-out labels), the
    training history. Attention is read from the softmax calls of the forward pass (Hugging Face
    models switched to eager attention for it); models whose attention runs in a fused kernel
    show none and the check is skipped. Sliding-window attention is normalised by the causal key
    count (its entropies read low).

    Fix: lower the peak learning rate or lengthen warmup; clip gradients; bound the attention
    logits: QK-layernorm (normalise queries and keys), logit soft-capping, or sigmaReparam
    (Zhai et al.: spectral reparametrisation of the linear layers); check that the attention
    scale 1/sqrt(head_dim) is applied.
    """

    code, name, layer = "R210", "attention-entropy", Layer.REACHABILITY
    needs = frozenset({"model"})
    probes = 2
    options = (
        Option("max_sequences", 128,
               source="design choice: bounds the cost (as many as the budget's probe share pays for); "
                      "the number is chosen by hand",
               help="At most this many sequences in the probe sample."),
        Option("max_length", 128,
               source="design choice: bounds the cost; the number is chosen by hand",
               help="Tokens per probe sequence (longer ones are cut)."),
        Option("collapsed", 0.05,
               source="design choice (ANCHORS.md: Zhai et al. 2023 publish no threshold): set where a "
                      "head is one-hot for practical purposes, about 97-98% of a row's mass on one key "
                      "(0.05 at e = 1.8% for n = 16, 2.6% for n = 128, 3.2% for n = 2048); an even "
                      "two-key split sits at log 2 / log n >= 0.09, above it",
               help="A head whose mean normalised attention entropy is below this is collapsed."),
        Option("most_collapsed", 0.75,
               source='design choice: "most heads", with margin: sharp special-purpose heads '
                      "(previous-token, induction, attention-sink) are a minority in trained models",
               help="The fraction of all heads collapsed that makes a warning."),
        Option("fall_ratio", 0.5,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.25) and doubled (capped at 1.0) give "
                      "the same verdicts and error codes",
               help="Chosen/earliest checkpoint mean entropy at or below this is a sharp fall (an "
                    "error when the probe loss also got worse)."),
        Option("trajectory_checkpoints", 4,
               source="design choice: bounds the cost (each checkpoint is a model load and two probe "
                      "passes); the number is chosen by hand",
               help="Checkpoints read for the trajectory (0: none)."),
        Option("trajectory_sequences", 32,
               source="design choice: bounds the cost; the number is chosen by hand",
               help="At most this many probe sequences per trajectory checkpoint."),
    )

    def run(self, run):
        o = self.opts
        model = run.model()
        data, split, batches = run_probe(run, o)
        res = attention_entropy(model, batches)
        heads = res.all_heads()
        if not heads.size and res.other_axis_calls:
            raise CheckSkipped(f"the {res.other_axis_calls} attention-shaped softmax call(s) seen do not "
                               "normalise over the key axis, so their rows are not distributions over "
                               "keys (see I306)")
        if not heads.size:
            raise CheckSkipped("no attention softmax over [.., T, T] scores was seen in the forward pass "
                               f"(attention implementation: {res.implementation}; fused kernels "
                               "normalise inside and show no softmax call)")
        cut = float(o["collapsed"])
        collapsed = [f"L{li}.H{hi}" for li, layer in enumerate(res.per_head)
                     for hi, v in enumerate(layer) if v < cut]
        frac = len(collapsed) / heads.size
        ev: dict[str, Any] = {
            "data": split, "sequences": res.sequences, "max_length": res.max_length,
            "causal_rows": res.causal, "attention_implementation": res.implementation,
            "layers": len(res.per_head), "heads": int(heads.size),
            "mean_normalised_entropy": C.num(res.mean, 3),
            "per_layer_head_entropy": [[C.num(v, 3) for v in layer] for layer in res.per_head],
            "collapsed_heads": collapsed[:64], "n_collapsed": len(collapsed),
            "collapsed_fraction": C.num(frac, 3), "collapsed_threshold": cut,
            "most_collapsed_threshold": o["most_collapsed"]}
        if not collapsed:
            return []
        most = frac >= o["most_collapsed"]
        trajectory = self._trajectory(run, data) if most else []
        if trajectory:
            ev["trajectory"] = trajectory
        unstable = self._instability(run) if most else []
        if unstable:
            ev["instability"] = unstable
        fell = self._fell(trajectory)
        if fell:
            ev["entropy_fall"] = fell
        more = f" and {len(collapsed) - 8} more" if len(collapsed) > 8 else ""
        heads_txt = ", ".join(collapsed[:8]) + more
        fix = ("Lower the peak LR or lengthen warmup and clip gradients; bound the attention logits "
               "(QK-layernorm, logit soft-capping or sigmaReparam, Zhai et al. 2023); check the "
               "1/sqrt(head_dim) scale.")
        if not most:
            return [self.finding(
                "info", f"{len(collapsed)} of {heads.size} attention heads attend almost entirely to "
                f"one key (mean normalised entropy < {cut}): {heads_txt}. A few sharp heads are "
                "normal (previous-token, induction, attention-sink heads).",
                confidence=0.3, evidence=ev, fix="",
                next_experiment="Print one collapsed head's attention on a few sequences: a fixed "
                                "offset (previous token) or a fixed key (first token) is a "
                                "special-purpose head, not a fault.")]
        base = (f"Attention entropy collapse: {len(collapsed)} of {heads.size} heads "
                f"({frac:.0%}) attend almost entirely to one key (mean normalised entropy < {cut}; "
                f"model mean {res.mean:.3g})")
        if unstable or fell:
            why = []
            if unstable:
                why.append("the training curve was unstable (" + "; ".join(u["what"] for u in unstable) + ")")
            if fell:
                why.append(f"the mean entropy fell from {fell['from_entropy']} at step {fell['from_step']} "
                           f"to {fell['to_entropy']} at step {fell['to_step']} while the probe loss rose "
                           f"from {fell['from_loss']} to {fell['to_loss']}")
            return [self.finding(
                "error", base + ", and " + " and ".join(why) + " (Zhai et al. 2023: entropy collapse "
                "goes with unstable training).", confidence=0.7, evidence=ev, fix=fix,
                next_experiment="Rerun with QK-layernorm (or the peak LR halved) from the same seed: "
                                "heads that keep their entropy and a curve without spikes confirm "
                                "the collapse cost the run.")]
        h = run.history
        read = h is not None and bool(h) and C.finite(*h.series("loss"))[0].size >= 5
        signs = ["a stable training curve" if read else "no training curve to read"]
        if trajectory:
            signs.append("no entropy fall across checkpoints")
        return [self.finding(
            "warning", base + ". No sign that it hurt training (" + ", ".join(signs) + ").",
            confidence=0.45, evidence=ev, fix=fix,
            next_experiment="Compare with a rerun using QK-layernorm or a lower peak LR: a lower "
                            "loss there shows the collapse cost performance; the same loss means "
                            "the task wants one-hot attention.")]

    # ---- evidence ----------------------------------------------------------------------------
    def _instability(self, run) -> list[dict[str, Any]]:
        """Non-finite train loss, divergence or loss spikes, by R203's own definitions."""
        from degrade.checks.reachability.r203_instability import TrainingInstability
        h = run.history
        if h is None or not h:
            return []
        r203 = TrainingInstability()
        found = [f for f in r203._non_finite(h)
                 if f.severity is Severity.ERROR and f.evidence.get("series") == "train loss"]
        s, v = C.finite(*h.series("loss"))
        if s.size >= 5:
            found += r203._divergence(s, v) or r203._spikes(s, v)
        return [{"what": f.message.rstrip("."), "severity": f.severity.value} for f in found]

    def _trajectory(self, run, data) -> list[dict[str, Any]]:
        k = int(self.opts["trajectory_checkpoints"])
        ckpts = W.with_weights(run)
        chosen = run.model_checkpoint
        if k < 2 or chosen is None or len(ckpts) < 2:
            return []
        upto = [c for c in ckpts if c.step <= chosen.step and c.path != chosen.path]
        if not upto:
            return []
        at = np.unique(np.linspace(0, len(upto) - 1, min(k - 1, len(upto))).round())
        picks = [upto[int(i)] for i in at]
        picks.append(chosen)
        # Each checkpoint reads the same probe rows twice (entropies, then the loss): the probe
        # share pays for all of them.
        idx = run.engine.probe_indices(data, forwards=2 * len(picks), cap=int(self.opts["trajectory_sequences"]))
        batches = probe_batches(data, idx, int(self.opts["max_length"]))
        out = []
        for c in picks:
            try:
                handle = run.model() if c is chosen else run.load_model(c)
                res = attention_entropy(handle, batches)
                loss = run.engine.run_pass(handle, data, idx, label="R210 trajectory").scores.token_mean_loss
            except Exception as e:  # noqa: BLE001 - an unreadable checkpoint: leave it out
                out.append({"step": c.step, "error": str(e)[:200]})
                continue
            heads = res.all_heads()
            if not heads.size:
                continue
            out.append({"step": c.step, "mean_entropy": C.num(res.mean, 3),
                        "collapsed_fraction": C.num(float((heads < self.opts["collapsed"]).mean()), 3),
                        "probe_loss": C.num(loss, 4)})
        return out

    def _fell(self, trajectory) -> dict[str, Any] | None:
        pts = [t for t in trajectory if "mean_entropy" in t]
        if len(pts) < 2:
            return None
        a, b = pts[0], pts[-1]
        if not (a["mean_entropy"] and a["mean_entropy"] > 0) or a["probe_loss"] is None:
            return None
        # A non-finite probe loss at the chosen checkpoint (None) is worse than any finite one.
        worse = b["probe_loss"] is None or b["probe_loss"] > a["probe_loss"]
        fell = self.opts["fall_ratio"] * a["mean_entropy"]
        low = b["mean_entropy"] is not None and b["mean_entropy"] <= fell
        if low and worse:
            return {"from_step": a["step"], "to_step": b["step"], "from_entropy": a["mean_entropy"],
                    "to_entropy": b["mean_entropy"], "from_loss": a["probe_loss"], "to_loss": b["probe_loss"]}
        return None
