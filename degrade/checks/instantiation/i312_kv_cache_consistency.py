"""I312 kv-cache-consistency: decoding with the KV cache gives other logits than the full forward."""
from __future__ import annotations

from typing import Any

import torch

from degrade.check import Check, CheckSkipped
from degrade.engine.batching import probe_length
from degrade.engine.forward import mode
from degrade.layers import Layer
from degrade.option import Option
from degrade.run.load import forward_params
from degrade.run.tasks import SEQ2SEQ
from degrade.stats import num

_HALF = (torch.float16, torch.bfloat16)
# transformers 5 renamed past_key_values to cache (the old name is deprecated); 4.x has the old one
_CACHE_ARGS = ("cache", "past_key_values")


class KvCacheConsistency(Check):
    """Incremental decoding disagrees with the full forward: the KV-cache path is wired wrongly.

    What it detects: for a sample of eval sequences (a causal LM's, or a seq2seq model's decoder
    sequences given their sources), the logits of one full forward over the sequence are compared
    with the logits of the same positions computed through the model's cache, in two variants:
      - stepwise: the first half of the sequence is prefilled with use_cache=True, then the rest is
        fed one token at a time with the returned cache, as generate() does;
      - last_step: everything but the last token is prefilled, then the last token is one step.
    Each step passes only the new token, the cache and (when the model takes one) an all-ones
    attention mask over everything seen so far: the model's own position handling is tested, as a
    caller of its forward would use it. A correct model gives the same logits up to float noise; one
    that computes positions from the cache length wrongly (off by one), forgets to offset its
    rotary or learned positions by the cache length, builds the causal mask without the past, or
    writes the cache at the wrong place diverges from the first cached step. Reported as an error
    when the largest difference exceeds `atol + rtol * logit_scale` (half-precision models: a
    multiple of both), with the argmax flips and the first cached step that diverges.

    Why it matters: training and the logged evaluation use the full forward, generation uses the
    cache: the model that was evaluated is not the one that generates, and generated text degrades
    (repetition, garbage after the prompt) while every eval metric looks fine.

    Evidence used: the model and the eval data (one probe share). Skipped when the model's forward
    takes no cache argument (past_key_values or cache) and use_cache, or returns no cache.

    Fix: compute positions as cache length + arange(new tokens) (or take them from cache_position),
    offset rotary/learned position lookups and the causal mask by the cache length, and test
    model(prefix) against prefill + one step before shipping. The weights need no retraining when
    only the cached path is wrong.
    """

    code, name, layer = "I312", "kv-cache-consistency", Layer.INSTANTIATION
    compares_forwards = True  # skipped when eval mode is not deterministic (engine/determinism.py)
    needs = frozenset({"model", "eval_data", "decoder"})
    tasks = frozenset({"causal-lm", "seq2seq"})
    probes = 1
    options = (
        Option("n_sequences", 8,
               source="design choice: a wrong cache path moves every sequence at every cached step, so a "
                      "few sequences suffice; 8 bounds the token-by-token decoding cost",
               help="At most this many eval sequences (at least 2 tokens each) are decoded."),
        Option("max_length", 64,
               source="design choice: an offset or mask bug shows from the first cached step; 64 tokens "
                      "keep 32 one-token steps per sequence",
               help="Sequences (and seq2seq sources) are truncated to this many tokens (and to the "
                    "position table, and to what keeps a few [T, vocab] logits in the logits budget)."),
        Option("atol", 1e-4,
               source="design choice: float32 attention over a cache runs kernels of another shape than "
                      "the full forward; measured below 1e-6 of the logit scale on CPU (tiny GPT-2 and "
                      "Llama, tests/test_kv_cache_consistency.py); margin by hand",
               help="Absolute tolerance on the logit difference (the tolerance is atol + rtol * logit "
                    "scale)."),
        Option("rtol", 1e-3,
               source="design choice: cached vs full float32 logits differ by ~1e-6 of the logit scale "
                      "(measured as for atol); 1e-3 leaves a wide margin (I304 uses the same)",
               help="Tolerance on the logit difference relative to the logit scale (the std of the "
                    "logits over the vocabulary, averaged over positions)."),
        Option("half_precision_factor", 100,
               source="design choice, as I304: float16/bfloat16 round far more coarsely than float32 "
                      "(bfloat16 keeps 8 significant bits, float32 24); measured ~0.02 of the logit scale "
                      "for the tiny GPT-2 and Llama in bfloat16 against a tolerance of 0.1",
               help="Half-precision models (float16, bfloat16) use this multiple of atol and rtol."),
    )

    @torch.no_grad()
    def run(self, run):
        o, model, data = self.opts, run.model(), run.eval_data
        module = model.module
        params = forward_params(module)
        cache_arg = next((a for a in _CACHE_ARGS if a in params), None)
        if cache_arg is None or "use_cache" not in params:
            raise CheckSkipped("the model's forward takes no past_key_values/cache and use_cache arguments: "
                               "it has no KV cache to compare")
        seq2seq = model.task == SEQ2SEQ
        limit = min(int(o["max_length"]), model.positions or 10**9, probe_length(model.out_size, 4))
        usable = [i for i, x in enumerate(data.input_ids) if len(x) >= 2]
        if not usable or limit < 2:
            raise CheckSkipped("no eval sequence has 2 or more tokens")
        n = int(o["n_sequences"])
        idx = run.engine.probe_indices(data, forwards=3, eligible=usable, minimum=min(4, n), cap=n)
        param = next(module.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        factor = o["half_precision_factor"] if dtype in _HALF else 1
        atol, rtol = o["atol"] * factor, o["rtol"] * factor
        call = _Caller(model, cache_arg, "attention_mask" in params and model.accepts_mask)
        tests = {v: {"max_abs": 0.0, "max_rel": 0.0, "affected": 0, "flips": 0, "preds": 0, "first": None}
                 for v in ("stepwise", "last_step")}
        with mode(module, False):
            for i in idx:
                ids = torch.tensor([list(data.input_ids[int(i)][:limit])], device=model.device)
                src = (torch.tensor([list(data.source[int(i)][:limit])], device=model.device)
                       if seq2seq else None)
                full = model.logits(ids, torch.ones_like(ids), source=None if src is None else
                                    (src, torch.ones_like(src)))[0]
                scale = float(full.std(dim=-1).mean())
                tol = atol + rtol * scale
                T = ids.shape[1]
                for name, k in (("stepwise", max(1, T // 2)), ("last_step", T - 1)):
                    diffs, flips = _decode(call, ids, src, k, full)
                    t = tests[name]
                    top = float(diffs.max())
                    t["max_abs"], t["max_rel"] = max(t["max_abs"], top), max(t["max_rel"], top / max(scale, 1e-12))
                    t["flips"] += flips
                    t["preds"] += T - k
                    over = (diffs > tol).nonzero()
                    if len(over):
                        t["affected"] += 1
                        step = int(over[0])
                        t["first"] = step if t["first"] is None else min(t["first"], step)
        ev: dict[str, Any] = {"sequences": int(len(idx)), "cache_argument": cache_arg, "dtype": str(dtype),
                              "tolerance_abs": atol, "tolerance_rel": rtol}
        for name, t in tests.items():
            ev[name] = {"max_abs_logit_difference": num(t["max_abs"]), "max_relative_difference": num(t["max_rel"]),
                        "sequences_affected": t["affected"], "prediction_flips": t["flips"],
                        "predictions": t["preds"], "first_diverging_cached_step": t["first"]}
        broken = {name: ev[name] for name, t in tests.items() if t["affected"]}
        if not broken:
            return []
        worst = max(broken.values(), key=lambda r: r["max_relative_difference"])
        first = min(r["first_diverging_cached_step"] for r in broken.values())
        when = "from the first cached step on" if first == 0 else f"from cached step {first} on"
        return [self.finding(
            "error",
            f"Decoding with the KV cache gives other logits than the full forward ({', '.join(broken)}): "
            f"up to {worst['max_abs_logit_difference']} ({worst['max_relative_difference']:.3g} of the logit "
            f"scale) in {worst['sequences_affected']} of {len(idx)} sequences, {when}, flipping "
            f"{worst['prediction_flips']} of {worst['predictions']} predictions. Generation does not run "
            f"the model that was evaluated.",
            confidence=0.95 if worst["prediction_flips"] else 0.8, evidence=ev,
            fix="Compute positions as the cache length plus arange(new tokens) (or from cache_position), "
                "offset position lookups and the causal mask by the cache length, and check where the "
                "cache is written; the trained weights are fine.",
            next_experiment="Run model(prefix) and model(prefix[:-1], use_cache=True) followed by one "
                            "step with the cache; print the position ids and mask each path builds.")]


def _decode(call, ids, src, k: int, full: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Prefill ids[:, :k], then one token per step: per cached position (k..T-1) the largest
    absolute difference from the full forward's logits, and the argmax flips."""
    _, cache = call(ids[:, :k], src, None, k)
    diffs, flips = [], 0
    for t in range(k, ids.shape[1]):
        logits, cache = call(ids[:, t:t + 1], src, cache, t + 1)
        step, ref = logits[0, -1], full[t]
        diffs.append((step - ref).abs().max())
        flips += int(step.argmax() != ref.argmax())
    return torch.stack(diffs).cpu(), flips


class _Caller:
    """One forward of `new` tokens with the cache; returns (logits float32, the new cache)."""

    def __init__(self, model, cache_arg: str, with_mask: bool):
        self.model, self.cache_arg, self.with_mask = model, cache_arg, with_mask

    def __call__(self, new, src, cache, seen: int):
        kwargs: dict[str, Any] = {"use_cache": True}
        if cache is not None:
            kwargs[self.cache_arg] = cache
        if src is not None:  # seq2seq: the encoder input each time (the cross-attention cache is reused)
            kwargs.update(input_ids=src, attention_mask=torch.ones_like(src), decoder_input_ids=new)
        else:
            kwargs["input_ids"] = new
            if self.with_mask:  # as generate() does: ones over the past and the new tokens
                kwargs["attention_mask"] = torch.ones((new.shape[0], seen), dtype=torch.long, device=new.device)
        out = self.model.module(**kwargs)
        nxt = next((out.get(a) for a in _CACHE_ARGS if hasattr(out, "get") and out.get(a) is not None), None)
        if nxt is None:
            raise CheckSkipped("the model's forward with use_cache=True returns no cache")
        logits = getattr(out, "logits", None)
        if logits is None:
            raise CheckSkipped("the model's forward with use_cache=True returns no logits")
        return logits.float(), nxt

