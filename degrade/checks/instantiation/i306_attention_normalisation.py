"""I306 attention-normalisation: attention weights that are not a distribution over keys."""
from __future__ import annotations

from typing import Any

import torch

from degrade.check import Check, CheckSkipped
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.components import find_components
from degrade.probing.softmax_capture import capture_softmax
from degrade.stats import num

_HALF = (torch.float16, torch.bfloat16)


class AttentionNormalisation(Check):
    """Attention weights that are not a distribution over keys (softmax over the wrong axis).

    What it detects, with two independent tests:
      - batch-composition invariance: each sampled sequence's logits alone are compared with its
        logits inside a batch of other sequences (all cut to one length, mask all ones, so padding
        plays no part). In a correct model a row's output cannot depend on the other rows; a
        softmax (or a normalisation) over the batch axis makes it depend on them. Error when the
        largest change exceeds `atol + rtol * logit_scale`.
      - the softmax axis: during one forward pass the softmax calls are recorded (F.softmax,
        torch.softmax, Tensor.softmax; Hugging Face models are switched to their eager attention
        for this pass so their softmax runs in Python). A softmax over a score tensor
        [..., T_query, T_key] (at least 3-D, last two sizes equal to the sequence length T, with T
        chosen different from the batch size and the head count) that does not normalise the last
        axis makes attention rows that are not distributions over keys: over queries (dim=-2) an
        earlier position's weights depend on later positions (in a causal LM also a leak, I301),
        over heads or batch other invariances break. Error. Fused kernels
        (scaled_dot_product_attention) normalise over keys by construction and show no call; the
        evidence says when no attention softmax was seen.
    Missing 1/sqrt(d) scaling is not reported: a trained model can absorb it into its weights, so it
    is not visible as a broken invariance.

    Why it matters: attention that is not a weighted average over keys is not the architecture
    that was designed: outputs depend on other positions or other examples in ways the hypothesis
    does not allow, eval numbers depend on batch composition, and a decoder may see the future.

    Evidence used: the model and the eval data (input_ids). Evidence: the largest absolute and
    relative logit change between alone and batched, the sequences affected, the attention-like
    softmax calls seen (shape, axis), and the attention implementation used.

    Fix: normalise attention scores over the key axis (`softmax(scores, dim=-1)` for scores laid
    out [batch, heads, query, key]); never normalise over the batch; then retrain.
    """

    code, name, layer = "I306", "attention-normalisation", Layer.INSTANTIATION
    compares_forwards = True  # skipped when eval mode is not deterministic (engine/determinism.py)
    needs = frozenset({"model", "eval_data"})
    probes = 1
    options = (
        Option("n_sequences", 8,
               source="design choice: bounds the cost (as many as the budget's probe share pays for); "
                      "the number is chosen by hand",
               help="At most this many eval sequences in the batch test (at least 2 are needed)."),
        Option("atol", 1e-5,
               source="design choice: batched float32 kernels differ by ~1e-6 relative; the margin is "
                      "chosen by hand",
               help="Absolute tolerance on the alone-vs-batched logit change (the tolerance is "
                    "atol + rtol * logit scale)."),
        Option("rtol", 1e-3,
               source="design choice: batched float32 kernels differ by ~1e-6 of the logit scale; 1e-3 "
                      "leaves a wide margin",
               help="Tolerance on the alone-vs-batched logit change relative to the logit scale."),
        Option("half_precision_factor", 100,
               source="design choice: float16/bfloat16 round far more coarsely than float32 (bfloat16 "
                      "keeps 8 significant bits, float32 24); the factor is chosen by hand",
               help="Half-precision models (float16, bfloat16) use this multiple of atol and rtol."),
        Option("max_length", 128,
               source="design choice: bounds the cost; the number is chosen by hand",
               help="Sequences are cut to this many tokens."),
    )

    @torch.no_grad()
    def run(self, run):
        o = self.opts
        model, data = run.model(), run.eval_data
        usable = [i for i, x in enumerate(data.input_ids) if len(x) >= 3]
        if len(usable) < 2:
            raise CheckSkipped("fewer than 2 eval sequences have 3 or more tokens")
        pick = run.engine.probe_indices(data, forwards=2, eligible=usable, cap=int(o["n_sequences"])).tolist()
        L = min(min(len(data.input_ids[i]) for i in pick), int(o["max_length"]), model.positions or 10**9)
        seqs = [list(data.input_ids[i][:L]) for i in pick]
        param = next(model.module.parameters(), None)
        f = o["half_precision_factor"] if param is not None and param.dtype in _HALF else 1
        atol, rtol = o["atol"] * f, o["rtol"] * f

        module = model.module
        was_training = module.training
        module.eval()
        try:
            batch_test = self._batch_invariance(model, seqs, atol, rtol)
            axis = self._softmax_axes(model, seqs, L)
        finally:
            module.train(was_training)

        ev: dict[str, Any] = {"sequences": len(seqs), "length": L, **batch_test, **axis["evidence"],
                              "tolerance_abs": atol, "tolerance_rel": rtol}
        findings = []
        if batch_test["sequences_affected"]:
            findings.append(self.finding(
                "error",
                f"A sequence's output depends on the other sequences in its batch: batching "
                f"{len(seqs)} sequences (same length, no padding) changed their logits by up to "
                f"{ev['max_abs_logit_change']} ({ev['max_relative_change']:.3g} of the logit scale) "
                f"in {batch_test['sequences_affected']} of {len(seqs)} sequences. Something "
                f"normalises across the batch (a softmax or norm over dim 0).",
                confidence=0.95 if batch_test["sequences_affected"] >= 2 else 0.8, evidence=ev,
                fix="Normalise attention over the key axis and every norm over features only; "
                    "nothing in a forward pass may mix the rows of a batch. Then retrain.",
                next_experiment="Evaluate with batch size 1 and with a large batch and compare the "
                                "eval losses."))
        wrong = axis["wrong"]
        if wrong:
            shapes = "; ".join(f"shape {list(c.shape)} normalised over axis {c.dim}" for c in wrong[:3])
            findings.append(self.finding(
                "error",
                f"Attention weights are not a distribution over keys: {len(wrong)} of "
                f"{axis['n_attention']} attention softmax call(s) normalise another axis than the "
                f"last (key) axis of the [.., query, key] scores ({shapes}).",
                confidence=0.85, evidence=ev,
                fix="Use softmax(scores, dim=-1) over the key axis (scores laid out [batch, heads, "
                    "query, key]), then retrain.",
                next_experiment="Print one head's attention matrix for a short sequence: its rows "
                                "(queries) should each sum to 1; after the fix rerun "
                                "`degrade diagnose --select I306,I301`."))
        return findings

    # ---- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _batch_invariance(model, seqs, atol, rtol) -> dict[str, Any]:
        ids = torch.tensor(seqs, dtype=torch.long)
        together = model.logits(ids, torch.ones_like(ids)).cpu()
        worst_abs, worst_rel, affected = 0.0, 0.0, 0
        for i, s in enumerate(seqs):
            one = torch.tensor([s], dtype=torch.long)
            alone = model.logits(one, torch.ones_like(one)).cpu()[0]
            d = float((together[i] - alone).abs().max())
            scale = float(alone.std(dim=-1).mean())
            worst_abs, worst_rel = max(worst_abs, d), max(worst_rel, d / max(scale, 1e-12))
            affected += d > atol + rtol * scale
        return {"max_abs_logit_change": num(worst_abs), "max_relative_change": num(worst_rel),
                "sequences_affected": int(affected)}

    @staticmethod
    def _softmax_axes(model, seqs, L) -> dict[str, Any]:
        module = model.module
        n_heads = {a.n_heads for a in find_components(module).attention}
        T = L
        while T > 2 and (T in n_heads or T == 3):
            T -= 1  # keep T distinct from the batch size (3) and the head count
        batch = torch.tensor([s[:T] for s in (seqs * 3)[:3]], dtype=torch.long)
        impl_before = getattr(getattr(module, "config", None), "_attn_implementation", None)
        switched = False
        if model.source == "hf" and impl_before not in (None, "eager") and hasattr(module, "set_attn_implementation"):
            try:
                module.set_attn_implementation("eager")
                switched = True
            except Exception:  # noqa: BLE001 - a model without eager attention: no softmax is seen
                switched = False
        try:
            with capture_softmax() as calls:
                model.logits(batch, torch.ones_like(batch))
        finally:
            if switched:
                module.set_attn_implementation(impl_before)
        attn = [c for c in calls if c.is_attention_like(T)]
        wrong = [c for c in attn if not c.over_last_axis]
        ev = {"attention_softmax_calls": len(attn), "softmax_length": T,
              "softmax_axes_seen": sorted({f"{len(c.shape)}-D axis {c.dim}" for c in attn}),
              "attention_implementation": "eager (switched for this pass)" if switched else (impl_before or "module's own")}
        if not attn:
            ev["softmax_note"] = ("no softmax over a [.., T, T] score tensor was seen (a fused "
                                  "attention kernel, or a softmax bound under another name)")
        return {"wrong": wrong, "n_attention": len(attn), "evidence": ev}
