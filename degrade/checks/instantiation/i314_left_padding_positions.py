"""I314 left-padding-positions: a prompt's outputs change when it is batched with left padding."""
from __future__ import annotations

from typing import Any

import torch

from degrade.check import Check, CheckSkipped
from degrade.engine.batching import probe_length
from degrade.layers import Layer
from degrade.option import Option
from degrade.run.load import forward_params
from degrade.stats import num

_HALF = (torch.float16, torch.bfloat16)


class LeftPaddingPositions(Check):
    """Batched decoding with left padding disagrees with each prompt alone: positions ignore the padding.

    What it detects: a decoder batches prompts of different lengths by padding them on the left
    (so that every prompt ends at the last column and generation appends to all of them). Each real
    token must then get the position it has alone: Hugging Face's `generate()` passes
    `position_ids = cumsum(attention_mask) - 1`. The check puts a sample of eval prompts of
    different lengths into one left-padded batch (pads masked) and compares every real token's
    logits with the same prompt run alone, two ways:
      - `mask_positions`: with position_ids from the attention mask, as generate() does. A correct
        model gives the logits it gives alone (up to float noise); a model whose forward drops or
        overrides position_ids, or a rotary embedding that reads positions from the sequence index
        instead of the ids given, does not (unsloth #3699, transformers #22161).
      - `own_positions`: without position_ids, the model's own default. Models with absolute
        position embeddings (GPT-2) then shift every prompt by its padding; rotary models (Llama)
        are unaffected because rotary attention depends only on relative positions. Reported as
        information: a batched inference loop that does not pass position_ids must not left-pad.
    Error when `mask_positions` differs beyond `atol + rtol * logit scale` (half-precision models:
    `half_precision_factor` times looser). A model that takes no position_ids cannot be told where
    a left-padded prompt starts: information, not a fault (it can be padded on the right, which
    I304 tests).

    Why it matters: training sees right-padded (or unpadded) sequences, but batched evaluation and
    serving left-pad; a model that places the padded prompts at the wrong positions answers a
    different question in a batch than alone, and the generation metrics measure that bug.

    Evidence used: the model (causal LM) and the eval data (prompts of varying lengths); the pad id
    from config.json (0 when it names none, degrade's own padding id).

    Fix: pass position_ids through every layer to the position embedding (or rotary embedding) and
    compute them from the attention mask for left-padded batches (cumsum(mask) - 1).
    """

    code, name, layer = "I314", "left-padding-positions", Layer.INSTANTIATION
    compares_forwards = True  # skipped when eval mode is not deterministic (engine/determinism.py)
    needs = frozenset({"model", "eval_data"})
    tasks = frozenset({"causal-lm"})
    probes = 1
    options = (
        Option("n_sequences", 16,
               source="arithmetic, as I304: 16 sequences see a bug touching a fraction f of them with "
                      "probability 1 - (1 - f)^16, 95% for f >= 17%",
               help="Eval prompts put into the left-padded batch."),
        Option("max_length", 48,
               source="design choice: a position bug shows on the first padded token; short prompts "
                      "keep the batch's logits small",
               help="Prompts are truncated to this many tokens (and to the position table)."),
        Option("atol", 1e-5,
               source="as I304: kernels of another shape reduce float32 in another order (~1e-6 relative)",
               help="Absolute tolerance on a real token's logit change."),
        Option("rtol", 1e-3,
               source="as I304: float32 reductions of another shape differ by ~1e-6 relative; 1e-3 leaves "
                      "a wide margin",
               help="Tolerance relative to the logit scale (the std of the logits over the vocabulary)."),
        Option("half_precision_factor", 100,
               source="as I304: bfloat16 keeps 8 significant bits, float32 24",
               help="Half-precision models use this multiple of atol and rtol."),
    )

    @torch.no_grad()
    def run(self, run):
        o, model, data = self.opts, run.model(), run.eval_data
        table = model.positions or 10**9
        limit = min(int(o["max_length"]), table // 2, probe_length(model.out_size, 4))
        usable = [i for i, x in enumerate(data.input_ids) if len(x) >= 2]
        if not usable or limit < 2:
            raise CheckSkipped("no eval sequence has 2 or more tokens" if usable == [] else
                               "the position table is too short to pad")
        n = int(o["n_sequences"])
        pick = run.engine.probe_indices(data, forwards=2, eligible=usable, minimum=n, cap=n).tolist()
        # Varying lengths make the padding differ per prompt; equal-length prompts are staggered by
        # cutting each to its own length so that every prompt but the longest is padded.
        seqs = [list(data.input_ids[i][:limit]) for i in pick]
        if len({len(s) for s in seqs}) == 1:
            seqs = [s[:max(2, len(s) - k)] for k, s in enumerate(seqs)]
        pad = _pad_id(model)
        takes_positions = "position_ids" in forward_params(model.module)
        param = next(model.module.parameters(), None)
        loose = o["half_precision_factor"] if param is not None and param.dtype in _HALF else 1
        atol, rtol = o["atol"] * loose, o["rtol"] * loose

        module, was = model.module, model.module.training
        module.eval()
        try:
            alone = [_logits(model, torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0] for s in seqs]
            width = max(len(s) for s in seqs)
            ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs])
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
            variants = {"own_positions": _logits(model, ids, mask)}
            if takes_positions:
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                variants["mask_positions"] = _logits(model, ids, mask, positions)
        finally:
            module.train(was)

        ev: dict[str, Any] = {"sequences": len(seqs), "lengths": [min(map(len, seqs)), width], "pad_id": pad,
                              "model_accepts_position_ids": takes_positions,
                              "tolerance_abs": atol, "tolerance_rel": rtol}
        for name, batch in variants.items():
            ev[name] = _compare(alone, batch, seqs, width, atol, rtol)
        own, given = ev["own_positions"], ev.get("mask_positions")
        if given is not None and given["sequences_affected"]:
            return [self.finding(
                "error", f"Left-padded batches disagree with each prompt alone even with position_ids from "
                f"the attention mask (as generate() passes them): real tokens' logits moved by up to "
                f"{given['max_abs_logit_change']} ({given['max_relative_change']:.3g} of the logit scale) "
                f"in {given['sequences_affected']} of {len(seqs)} prompts, flipping "
                f"{given['prediction_flips']:.1%} of predictions: the model ignores or misplaces the "
                "position_ids it is given.",
                confidence=0.9, evidence=ev,
                fix="Thread position_ids from the forward's arguments to the position (or rotary) "
                    "embedding of every layer instead of recomputing arange(seq_len); re-evaluate.",
                next_experiment="Run one padded prompt with position_ids and hook the position embedding's "
                                "input: it should read 0..n-1 on the real tokens.")]
        if not own["sequences_affected"]:
            return []
        if not takes_positions:  # not a fault of the model: it only cannot be left-padded
            return [self.finding(
                "info", f"The model takes no position_ids, so left padding shifts its positions: "
                f"{own['sequences_affected']} of {len(seqs)} prompts change (up to "
                f"{own['max_relative_change']:.3g} of the logit scale) in a left-padded batch. Pad on "
                "the right, or decode one prompt at a time.", confidence=0.5, evidence=ev)]
        return [self.finding(
            "info", f"Positions are absolute: without position_ids a left-padded batch shifts "
            f"{own['sequences_affected']} of {len(seqs)} prompts (up to {own['max_relative_change']:.3g} "
            "of the logit scale); with position_ids from the mask they match. Batched inference code "
            "must pass position_ids when it left-pads (generate() does).", confidence=0.5, evidence=ev)]



def _pad_id(model) -> int:
    pad = getattr(getattr(model.module, "config", None), "pad_token_id", None)
    return int(pad) if isinstance(pad, int) and pad >= 0 else 0


def _logits(model, ids, mask, positions=None) -> torch.Tensor:
    if positions is None:
        return model.logits(ids, mask).cpu()
    out = model.module(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                       position_ids=positions.to(model.device))
    out = getattr(out, "logits", out)
    return (out[0] if isinstance(out, (tuple, list)) else out).float().cpu()


def _compare(alone, batch, seqs, width, atol, rtol) -> dict[str, Any]:
    """Each prompt's real tokens in the batch (its last len(s) columns) against it alone."""
    worst_abs, worst_rel, affected, flips, preds = 0.0, 0.0, 0, 0, 0
    for k, (ref, s) in enumerate(zip(alone, seqs)):
        out = batch[k, width - len(s):]
        d, scale = float((out - ref).abs().max()), float(ref.std(dim=-1).mean())
        worst_abs, worst_rel = max(worst_abs, d), max(worst_rel, d / max(scale, 1e-12))
        affected += d > atol + rtol * scale
        flips += int((out.argmax(-1) != ref.argmax(-1)).sum())
        preds += len(s)
    return {"max_abs_logit_change": num(worst_abs), "max_relative_change": num(worst_rel),
            "sequences_affected": int(affected), "prediction_flips": num(flips / max(preds, 1), 3)}
