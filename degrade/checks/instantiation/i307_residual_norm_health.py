"""I307 residual-norm-health: a broken residual stream or normalisation."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from degrade.check import Check, CheckSkipped
from degrade.engine.batching import sized_batches
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.blocks import find_blocks, find_norms
from degrade.stats import num


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    return getattr(x, "last_hidden_state", None)


class ResidualNormHealth(Check):
    """A broken residual stream or normalisation: norms that do not normalise, hidden states that
    grow or shrink geometrically with depth, or token representations that collapse into one.

    What it detects, with forward hooks on the blocks (the children of the ModuleList holding the
    attention layers) and on every norm module (class name with "Norm", a 1-D weight; batch,
    group and instance norms excluded), over a sample of eval sequences (real tokens only):
      - a norm whose output is not normalised: the output with the norm's own affine map undone,
        z = (y - bias) / weight, must equal what a correct norm makes of the same input, computed
        from the hook's input x: (x - mean) / sqrt(var + eps) (LayerNorm) or x / sqrt(mean(x^2) +
        eps) (RMSNorm; either reading when the module has no bias). A hand-written norm that
        divides by the variance instead of its square root, normalises the wrong axis, or forgets
        a term does not. Error when more than `bad_token_fraction` of tokens deviate (root mean
        square over features) by more than `norm_tol`. Features whose weight is near 0 (z is
        undefined there) are compared on the others only; the comparison with the expected
        values, not with "unit standard deviation", keeps a correct norm quiet when a pretrained
        encoder's outlier features (huge values, weight near 0) are the ones left out. Tokens whose
        input variance is below 100x the norm's eps, and norms with more than 5% of weights near
        zero, are left out;
      - geometric growth or decay: the mean token norm after each block; with 3 or more blocks,
        every block-to-block ratio above `growth_factor` (or below its inverse) is a residual
        stream that multiplies instead of adds (a missing residual, a norm placed wrong). Error;
      - rank collapse: per sequence, the spread of its token representations around their mean,
        ||X - mean_tokens(X)||_F / ||X||_F. Pure attention without residual connections loses
        rank doubly exponentially with depth (Dong et al. 2021, "Attention is not all you need");
        a spread below `collapse_tol` after the last block while the block input had 10x that is
        an error (every position would predict the same thing).

    Why it matters: the residual stream and its norms are what lets a deep transformer train and
    keep per-token information; a norm that does not normalise, or a stream that explodes,
    vanishes or collapses, is not the architecture that was designed and costs stability or
    accuracy even when training seems to go.

    Evidence used: the model and the eval data (input_ids; padding masked). Evidence: per norm,
    the median and worst deviation of z's standard deviation (or RMS) from 1 and the fraction of
    tokens off; the mean token norm per block and the ratios; the token spread at the block
    input and after the last block.

    Fix: compute norms over the feature axis with the square root of the variance (use
    nn.LayerNorm / the framework's RMSNorm); add every sub-layer's output to the residual stream
    (x = x + f(norm(x))); then retrain.
    """

    code, name, layer = "I307", "residual-norm-health", Layer.INSTANTIATION
    needs = frozenset({"model", "eval_data"})
    requires_learning = True  # degrade/learned.py: skipped while the model has not learned
    probes = 1
    options = (
        Option("n_sequences", 16,
               source="design choice: bounds the cost (as many as the budget's probe share pays for); "
                      "the number is chosen by hand",
               help="At most this many eval sequences (truncated to 256 tokens)."),
        Option("norm_tol", 0.02,
               source="design choice: a correct norm deviates by ~eps/var (1e-5 in float32, ~1e-3 after "
                      "bfloat16 rounding); a norm over the wrong axis by ~1/sqrt(d_model) (0.1 at "
                      "d_model 64); 0.02 sits between",
               help="Deviation of a token's normalised std (or RMS) from 1, or of its mean from 0, that "
                    'counts as "not normalised".'),
        Option("bad_token_fraction", 0.5,
               source="DegradeBench v1 (the hand-built cases used in development): a LayerNorm without the "
                      "square root (i3-norm-no-sqrt-copy) has all 5 norms off on 61-100% of tokens, "
                      "healthy GPT-2/BERT/TinyGPT are quiet; 0.5 is chosen by hand",
               help="Fraction of tokens off for a norm to be reported."),
        Option("growth_factor", 4.0,
               source="design choice: healthy pre-LN models grow ~sqrt-linearly (Xiong et al. 2020) and "
                      "post-LN blocks output unit norms, far below 4x per block",
               help="Per-block norm ratio that, in every block, counts as geometric growth (or, below "
                    "its inverse, decay)."),
        Option("collapse_tol", 0.01,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (0.005) and doubled (0.02) give the same "
                      "verdicts and error codes",
               help="Token spread after the last block below which representations have collapsed."),
        Option("collapse_input_ratio", 10,
               source="chosen by hand, then measured on the bench dev split (110 cases, "
                      "benchmarks/option_sensitivity.py): halved (5) and doubled (20) give the same "
                      "verdicts and error codes",
               help="Collapse is an error only when the block input's token spread was at least this "
                    "multiple of collapse_tol."),
    )

    @torch.no_grad()
    def run(self, run):
        o = self.opts
        model, data = run.model(), run.eval_data
        module = model.module
        _, blocks = find_blocks(module)
        norms = find_norms(module)
        if not blocks and not norms:
            raise CheckSkipped("no transformer blocks (a ModuleList holding the attention layers) "
                               "and no norm modules found")
        idx = run.engine.probe_indices(data, cap=int(o["n_sequences"]))
        # Reduced in the hooks, a batch at a time: keeping every norm's and block's input and
        # output (74 tensors of 16 x 128 x 768 on GPT-2 small) would hold ~0.5 GB.
        captured: dict[str, list] = {}
        current = {}
        norm_params = {name: _norm_params(module.get_submodule(name)) for name in norms}
        first_block = blocks[0] if blocks else None

        def keep(name, kind):
            def hook(mod, args, out):
                x, y, m = _first_tensor(args[0] if args else None), _first_tensor(out), current["mask"]
                if kind == "norm":
                    captured.setdefault(name, []).append(_norm_deviation(norm_params[name], x, y, m))
                else:
                    captured.setdefault(name, []).append(_block_stats(x, y, m, name == first_block))
            return hook

        hooks = [module.get_submodule(n).register_forward_hook(keep(n, "norm")) for n in norms]
        hooks += [module.get_submodule(n).register_forward_hook(keep(n, "block")) for n in blocks]
        was_training = module.training
        module.eval()
        n_batches = 0
        try:
            # an HF model computes one position's logits (logits_to_keep); others all of them
            width = 1 if model.keeps_logits() else (model.out_size or 2 ** 16)
            for _, ids, mask, _ in sized_batches(data, idx, out_size=width, max_length=256):
                current["mask"] = mask.bool()
                model.logits(ids, mask, positions=[0])  # the hooks read what runs before the head
                n_batches += 1
        finally:
            for h in hooks:
                h.remove()
            module.train(was_training)

        ev: dict[str, Any] = {"sequences": int(len(idx)), "blocks": len(blocks), "norms": len(norms)}
        findings = []
        bad_norms = self._norm_health(norms, norm_params, captured, n_batches, ev)
        if bad_norms:
            worst = max(bad_norms, key=lambda r: r["tokens_off"])
            names = ", ".join(r["module"] for r in bad_norms[:4]) + (" ..." if len(bad_norms) > 4 else "")
            findings.append(self.finding(
                "error",
                f"{len(bad_norms)} of {len(ev['norm_checks'])} norm module(s) do not normalise "
                f"({names}): with their scale and shift undone, {worst['tokens_off']:.0%} of tokens "
                f"have a standard deviation (or RMS) over features off 1 (or a mean off 0) by more "
                f"than {worst['tolerance']} (median deviation {worst['median_deviation']}). The norm's code is "
                f"wrong (variance without square root, wrong axis, a missing term).",
                confidence=0.85, evidence=ev,
                fix="Normalise over the feature axis with the square root of the variance (use "
                    "nn.LayerNorm or the framework's RMSNorm), then retrain.",
                next_experiment="Feed random vectors of different scales through one norm module and "
                                "print the output std per vector: it should be 1 for every scale."))
        if blocks:
            findings += self._depth(blocks, captured, n_batches, ev)
        return findings

    # ---- norms -------------------------------------------------------------------------------
    def _norm_health(self, norms, norm_params, captured, n_batches, ev) -> list[dict[str, Any]]:
        o = self.opts
        rows, bad = [], []
        for name in norms:
            calls = captured.get(name) or []
            usable = norm_params[name][3]
            if not calls or float(usable.float().mean()) < 0.95 or len(calls) != n_batches:
                continue
            devs = []
            for dev in calls:
                if dev is None:
                    break
                devs.append(dev)
            if not devs:
                continue
            d = torch.cat(devs)
            if d.numel() == 0:
                continue
            tol = o["norm_tol"]
            off = float((d > tol).float().mean())
            row = {"module": name, "median_deviation": num(d.median()), "max_deviation": num(d.max()),
                   "tokens_off": round(off, 3), "tokens": int(d.numel()), "tolerance": tol}
            rows.append(row)
            if off > o["bad_token_fraction"]:
                bad.append(row)
        ev["norm_checks"] = rows
        return bad

    # ---- depth -------------------------------------------------------------------------------
    def _depth(self, blocks, captured, n_batches, ev) -> list:
        o = self.opts
        norms_by_block, spreads = [], []
        first_in = []
        for name in blocks:
            calls = captured.get(name) or []
            if len(calls) != n_batches or any(c is None for c in calls):
                return []
            first_in += [c[2] for c in calls if c[2] is not None]
            norms_by_block.append(float(torch.cat([c[0] for c in calls]).mean()))
            spread = np.concatenate([c[1] for c in calls])
            spreads.append(float(np.median(spread)) if spread.size else float("nan"))
        ratios = [b / a if a > 0 else float("inf") for a, b in zip(norms_by_block, norms_by_block[1:])]
        ev.update({"block_output_norms": [num(v) for v in norms_by_block],
                   "block_norm_ratios": [num(r, 3) for r in ratios],
                   "token_spread_after_blocks": [num(v, 3) for v in spreads]})
        spread_in = float(np.median(np.concatenate(first_in))) if first_in else None
        ev["token_spread_block_input"] = num(spread_in, 3) if spread_in is not None else None
        out = []
        f = o["growth_factor"]
        if len(ratios) >= 2 and (all(r > f for r in ratios) or all(r < 1 / f for r in ratios)):
            grows = ratios[0] > 1
            out.append(self.finding(
                "error",
                f"Hidden-state norms {'grow' if grows else 'shrink'} geometrically with depth: every "
                f"block multiplies the mean token norm by {min(ratios) if grows else max(ratios):.3g} "
                f"or more{'' if grows else ' (less)'} (norms {ev['block_output_norms']}). The "
                f"residual stream multiplies instead of adds: a missing residual or a misplaced norm.",
                confidence=0.75, evidence=ev,
                fix="Add each sub-layer's output to the residual stream (x = x + f(norm(x))) and keep "
                    "the norm inside the branch (pre-LN) or after the sum (post-LN), then retrain.",
                next_experiment="Print the hidden-state norm after each block for one input at "
                                "initialisation: a healthy stack grows slowly, not by a factor per block."))
        last = spreads[-1] if spreads else float("nan")
        if (spread_in is not None and np.isfinite(last)
                and last < o["collapse_tol"] <= spread_in / o["collapse_input_ratio"]):
            out.append(self.finding(
                "error",
                f"Token representations collapse with depth: after the last block the tokens of a "
                f"sequence differ from their mean by {last:.3g} of their norm (block input: "
                f"{spread_in:.3g}); every position carries nearly the same vector (rank collapse).",
                confidence=0.8, evidence=ev,
                fix="Restore the residual connections around attention and MLP (rank collapse is what "
                    "attention without residuals does, Dong et al. 2021), then retrain.",
                next_experiment="Compute the token spread after each block at initialisation and after "
                                "the fix; it should stay well above 0."))
        return out


def _norm_params(mod) -> tuple:
    """(weight, bias or None, eps, usable features) of a norm module, in float32."""
    w = mod.weight.detach().float()
    b = getattr(mod, "bias", None)
    b = b.detach().float() if isinstance(b, torch.Tensor) else None
    eps = float(getattr(mod, "eps", getattr(mod, "variance_epsilon", 1e-5)) or 1e-5)
    return w, b, eps, w.abs() > 1e-3 * float(w.abs().max() or 1.0)


def _norm_deviation(params, x, y, m) -> torch.Tensor | None:
    """Per real token with enough input variance: how far the norm's output, with its affine map
    undone, is from what a correct norm makes of the same input, z = (x - mean) / sqrt(var + eps)
    (LayerNorm) or x / sqrt(mean(x^2) + eps) (RMSNorm, either reading when there is no bias): the
    root-mean-square difference over the features whose weight is usable. Comparing with the
    expected values rather than with "unit standard deviation" keeps a correct norm quiet when
    features are left out: a pretrained encoder's outlier features (huge z, a weight near 0)
    carry most of a token's variance, and the rest of its features alone are far from unit std.
    None when the shapes do not fit."""
    w, b, eps, usable = params
    if x is None or y is None or y.shape[-1] != w.numel() or y.shape[:2] != m.shape or x.shape != y.shape:
        return None
    x, y = x.float()[m], y.float()[m]  # [tokens, d]
    z = ((y - (b if b is not None else 0)) / torch.where(usable, w, torch.ones_like(w)))[:, usable]
    ok = x.var(-1, unbiased=False) > 100 * eps
    c = x - x.mean(-1, keepdim=True)
    layer = c / torch.sqrt(c.pow(2).mean(-1, keepdim=True) + eps)
    dev = (z - layer[:, usable]).pow(2).mean(-1).sqrt()
    if b is None:  # RMSNorm, or a LayerNorm without bias: either reading is normalised
        rms = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        dev = torch.minimum(dev, (z - rms[:, usable]).pow(2).mean(-1).sqrt())
    return dev[ok]


def _block_stats(x, y, m, first: bool) -> tuple | None:
    """(token norms, per-sequence spreads after the block, spreads of its input when `first`)."""
    if y is None or y.ndim != 3 or y.shape[:2] != m.shape:
        return None
    spread_in = _spread(x.float(), m) if first and x is not None and x.ndim == 3 else None
    return y.float()[m].norm(dim=-1), _spread(y.float(), m), spread_in


def _spread(x: torch.Tensor, m: torch.Tensor) -> np.ndarray:
    out = []
    for row, keep in zip(x, m):
        t = row[keep]
        if t.shape[0] >= 4:
            out.append(float((t - t.mean(0)).norm() / max(float(t.norm()), 1e-12)))
    return np.asarray(out, dtype=float)
