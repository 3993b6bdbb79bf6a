"""I301 causal-mask-leak: a causal LM whose predictions at position t see tokens after t."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from degrade.check import Check, CheckSkipped
from degrade.engine.batching import probe_length
from degrade.layers import Layer
from degrade.option import Option
from degrade.stats import num

_HALF = (torch.float16, torch.bfloat16)


class CausalMaskLeak(Check):
    """A causal LM whose predictions at position t depend on tokens after t (a mask leak).

    What it detects: future information reaching earlier positions. For a sample of eval sequences
    and several cut points t per sequence, the tokens after t are resampled (each replaced by a
    different token drawn from the tokens seen in the sample) and the logits at positions 0..t are
    compared with the original ones. In a correct causal LM they are identical up to float noise
    (about 1e-6 of the logit scale in float32, exactly 0 on most kernels). Reported as an error
    when the largest change exceeds `atol + rtol * logit_scale` (logit scale: the standard
    deviation of the logits over the vocabulary, averaged over positions). Catches a missing or
    inverted causal mask, an off-by-one mask (position t sees t+1: `leak_reach` 1), a softmax over
    the wrong axis (normalising over queries mixes later positions into earlier ones), and padding
    masks that replace the causal one. Untrained models show a leak as clearly as trained ones.
    On an encoder-decoder (seq2seq) model the decoder sequence is resampled with its source held
    fixed: the decoder's self-attention mask is what is tested.

    Why it matters: a model that sees the token it must predict reports an eval loss it cannot
    reach when generating one token at a time; the observation is wrong, and the architecture that
    was trained is not the one that will be deployed.

    Evidence used: the model and the eval data (input_ids only); the attention mask passed is all
    ones, so padding plays no part. Evidence: the largest absolute and relative logit change at a
    position <= t, where it happened (sequence, cut, position), `leak_reach` (how far before the
    first changed token the earliest affected position lies: 1 means only the position right
    before it), and the fraction of cut points affected.

    Fix: apply the causal mask in every attention layer (e.g. `torch.tril`, `is_causal=True`, or
    the model's own mask builder), combine it with the padding mask instead of replacing it, and
    normalise the attention softmax over the key axis (dim=-1). Then retrain: the trained weights
    rely on the leak.
    """

    code, name, layer = "I301", "causal-mask-leak", Layer.INSTANTIATION
    compares_forwards = True  # skipped when eval mode is not deterministic (engine/determinism.py)
    needs = frozenset({"model", "eval_data", "decoder"})
    tasks = frozenset({"causal-lm", "seq2seq"})  # seq2seq: the decoder's mask, the source held fixed
    probes = 1
    options = (
        Option("n_sequences", 16,
               source="design choice: bounds the cost (as many as the budget's probe share pays for); "
                      "the number is chosen by hand",
               help="At most this many eval sequences (sequences shorter than 4 tokens are not used)."),
        Option("n_cuts", 4,
               source="design choice: cut points spread over the sequence (1/4, 1/2, 3/4 of the length "
                      "and the last position)",
               help="Cut points per sequence."),
        Option("atol", 1e-5,
               source="design choice: a correct causal LM changes by exactly 0 on most kernels, float32 "
                      "kernels by ~1e-7 relative; the margin is chosen by hand",
               help="Absolute tolerance on the logit change at positions <= t (the tolerance is "
                    "atol + rtol * logit scale)."),
        Option("rtol", 1e-4,
               source="design choice: float32 kernels differ by ~1e-7 of the logit scale; 1e-4 leaves "
                      "a wide margin",
               help="Tolerance on the logit change relative to the logit scale (the standard deviation "
                    "of the logits over the vocabulary, averaged over positions)."),
        Option("half_precision_factor", 100,
               source="design choice: float16/bfloat16 round far more coarsely than float32 (bfloat16 "
                      "keeps 8 significant bits, float32 24); the factor is chosen by hand",
               help="Half-precision models (float16, bfloat16) use this multiple of atol and rtol."),
        Option("max_length", 512,
               source="design choice: bounds the cost; the number is chosen by hand",
               help="Sequences are truncated to this many tokens (and to the model's position table, "
                    "and to as many as keep four [T, vocab] float32 logits within the engine's logits "
                    "budget: 256 MB, 326 tokens of a 50,257-token vocabulary)."),
    )

    @torch.no_grad()
    def run(self, run):
        o = self.opts
        model, data = run.model(), run.eval_data
        # a sequence's logits are held four times at most (itself, a variant, their difference)
        limit = min(int(o["max_length"]), model.positions or 10**9, probe_length(model.out_size, 4))
        usable = [i for i, x in enumerate(data.input_ids) if len(x) >= 4]
        if not usable:
            raise CheckSkipped("no eval sequence has 4 or more tokens")
        rng = np.random.default_rng(run.options.seed)
        # each sequence, then once per cut with its future changed: the probe share pays for both
        pick = run.engine.probe_indices(data, forwards=1 + int(o["n_cuts"]), eligible=usable,
                                        cap=int(o["n_sequences"]))
        seqs = [list(data.input_ids[int(i)][:limit]) for i in pick]
        sources = [data.source[int(i)] for i in pick] if data.source is not None else [None] * len(seqs)
        pool = np.unique(np.concatenate([np.asarray(s) for s in seqs]))
        param = next(model.module.parameters(), None)
        half = param is not None and param.dtype in _HALF
        atol = o["atol"] * (o["half_precision_factor"] if half else 1)
        rtol = o["rtol"] * (o["half_precision_factor"] if half else 1)

        module = model.module
        was_training = module.training
        module.eval()
        worst: dict[str, Any] = {"abs": 0.0, "rel": 0.0}
        n_cuts = n_affected = 0
        reach = 0
        scales = []
        try:
            for s_i, seq in enumerate(seqs):
                cuts, batch = self._variants(seq, pool, int(o["n_cuts"]), rng)
                # One row per forward: a long sequence's vocabulary-wide logits are held for two
                # rows at most (the original and one variant), not for the whole batch.
                base = self._row_logits(model, batch[0], source=sources[s_i])
                scale = float(base.std(dim=-1).mean())
                scales.append(scale)
                tol = atol + rtol * scale
                for c, t in enumerate(cuts):
                    variant = self._row_logits(model, batch[c + 1], t + 1, sources[s_i])
                    diff = (variant - base[:t + 1]).abs().amax(dim=-1)  # per position
                    n_cuts += 1
                    m = float(diff.max())
                    if m > worst["abs"]:
                        p = int(diff.argmax())
                        worst = {"abs": m, "rel": m / max(scale, 1e-12), "sequence": s_i, "cut": t,
                                 "position": p}
                    hit = torch.nonzero(diff > tol).flatten()
                    if hit.numel():
                        n_affected += 1
                        reach = max(reach, t + 1 - int(hit.min()))
        finally:
            module.train(was_training)

        ev = {"sequences": len(seqs), "cut_points": n_cuts, "cut_points_affected": n_affected,
              "fraction_affected": num(n_affected / max(n_cuts, 1), 3),
              "max_abs_logit_change": num(worst["abs"]), "max_relative_change": num(worst["rel"]),
              "logit_scale": num(float(np.mean(scales))), "tolerance_abs": atol, "tolerance_rel": rtol,
              "attention_mask": "all ones"}
        if n_affected == 0:
            return []
        ev.update({"worst_at": {"sequence": worst["sequence"], "cut": worst["cut"],
                                "position": worst["position"]},
                   "leak_reach": reach})
        where = ("every earlier position" if reach >= 4 else
                 f"positions up to {reach} token(s) before the changed ones")
        return [self.finding(
            "error",
            f"Future tokens change earlier predictions: resampling the tokens after position t "
            f"changed the logits at positions <= t by up to {ev['max_abs_logit_change']} "
            f"({ev['max_relative_change']:.3g} of the logit scale) in {n_affected} of {n_cuts} cut "
            f"points; the leak reaches {where}. The causal mask is missing or wrong.",
            confidence=0.95 if n_affected / n_cuts >= 0.25 else 0.8, evidence=ev,
            fix="Apply the causal mask in every attention layer (torch.tril / is_causal=True), "
                "combine it with the padding mask rather than replacing it, normalise the attention "
                "softmax over keys (dim=-1), then retrain: the weights have learned to use the leak.",
            next_experiment="Generate greedily one token at a time on a few eval sequences and "
                            "compare the per-token loss with the teacher-forced eval loss; after "
                            "fixing the mask, rerun `degrade diagnose --select I301`.")]

    @staticmethod
    def _row_logits(model, row: list[int], upto: int | None = None, source: list[int] | None = None) -> torch.Tensor:
        """[T, V] logits of one sequence (positions < upto when given); a seq2seq decoder sequence
        is read given its (unchanged) source."""
        ids = torch.tensor([row], dtype=torch.long)
        keep = list(range(upto)) if upto is not None else None
        src = None if source is None else (torch.tensor([source], dtype=torch.long),
                                           torch.ones((1, len(source)), dtype=torch.long))
        return model.logits(ids, torch.ones_like(ids), positions=keep, source=src)[0].cpu()

    @staticmethod
    def _variants(seq: list[int], pool: np.ndarray, n_cuts: int, rng) -> tuple[list[int], list[list[int]]]:
        L = len(seq)
        fracs = [0.25, 0.5, 0.75][:max(n_cuts - 1, 0)]
        cuts = sorted({min(max(int(f * L), 0), L - 2) for f in fracs} | {L - 2})
        batch = [list(seq)]
        for t in cuts:
            v = list(seq)
            for p in range(t + 1, L):
                choices = pool[pool != seq[p]] if len(pool) > 1 else pool
                v[p] = int(rng.choice(choices))
            batch.append(v)
        return cuts, batch
