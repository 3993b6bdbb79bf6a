"""I313 precision-agreement: the model in its half precision disagrees with itself in float32."""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from degrade.check import Check, CheckSkipped
from degrade.engine.forward import forward
from degrade.layers import Layer
from degrade.option import Option
from degrade.probing.precision_pair import OverflowCapture, PairedHandle, PrecisionCompare, kl_trend
from degrade.stats import num

_HALF = {"float16": torch.float16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "bf16": torch.bfloat16}


class PrecisionAgreement(Check):
    """The model in half precision (float16/bfloat16) overflows or drifts away from itself in float32.

    What it detects: a probe sample of eval rows is run, batch by batch, by the model in its low
    precision and by a copy in float32. The low precision is the checkpoint's own dtype when it is
    float16/bfloat16, else the one the run names (config.json `dtype`/`torch_dtype`, or the recorded
    training arguments fp16/bf16: mixed precision saves float32 weights); a float32 run naming none
    is skipped. Hooks on every submodule count non-finite outputs on real tokens in each precision
    and the largest |activation| against the dtype's largest number. Logits are compared per
    position: KL(float32 || low), and top-1 agreement where float32's top two logits are no near-tie
    (`tie_gap`, `tie_steps`).
      - error: inf/NaN in the low precision where float32 stays finite (float16 overflow, as in T5's
        feed-forward, transformers #5651; the first module to overflow is named), or top-1
        agreement below `min_agreement`;
      - warning: divergence growing with position (Spearman's rho over positions at p < `trend_p`,
        the last quarter `growth_factor` times the first eighth): rotary angles computed in
        bfloat16, which holds integer positions exactly only up to 256 (transformers PR #29285); or
        activations within `near_overflow` of the dtype's maximum (other inputs may overflow).

    Why it matters: a model trained or served in half precision that overflows gives NaN losses and
    garbage predictions on some inputs; one whose position encoding rounds badly degrades with
    context length, so long inputs score worse for a numeric reason, not a modelling one.

    Evidence used: the model and the eval data (two forwards per probe row; a float32 copy of a half
    model, or a half copy of a float32 one, is held while the check runs). Evidence: the dtype and
    what named it, agreement and KL overall and per position quarter, the trend, non-finite logits,
    the overflowing modules, the largest activation and its headroom.

    Fix: for overflow, run in bfloat16 (float32's range), keep the module in float32
    (transformers' `_keep_in_fp32_modules`, as T5 keeps `wo`) or clamp it; for divergence with
    position, compute rotary angles (inv_freq x positions) and cos/sin in float32; for broad
    disagreement, find the op computed in low precision (softmax, norm) by hooking both copies.
    """

    code, name, layer = "I313", "precision-agreement", Layer.INSTANTIATION
    compares_forwards = True  # skipped when eval mode is not deterministic (engine/determinism.py)
    needs = frozenset({"model", "eval_data"})
    tasks = frozenset({"causal-lm", "sequence-classification", "seq2seq"})
    probes = 2
    options = (
        Option("n_sequences", 16,
               source="design choice: overflow shows on any row that exceeds the range and position drift "
                      "on every long row; 16 rows of two forwards keep the probe cheap",
               help="At most this many eval rows are compared (at least 4 when the data has them)."),
        Option("max_length", 2048,
               source="transformers PR #29285 (bfloat16 RoPE loses precision most at long context) and "
                      "arithmetic: bfloat16 holds integers exactly to 256, 2048 is 8x past that",
               help="Rows are cut to this many tokens."),
        Option("min_agreement", 0.9,
               source="design choice: bfloat16 rounds by ~0.4% (8 significant bits; float16 11); past "
                      "tie_gap a flip needs a logit error of 2.5%+ of the logits' spread, so rounding flips "
                      "few decided positions (none of 5,000-7,000 of a tiny Llama at 2048 tokens in either dtype); "
                      "10% is far past it",
               help="Top-1 agreement with float32 over decided positions (no near-tie) below this is an error."),
        Option("tie_gap", 0.05,
               source="design choice: ~10x bfloat16's relative rounding of a logit, so ties rounding can "
                      "flip are left out",
               help="Positions whose float32 top-two logit gap is under this multiple of the logits' std "
                    "are near-ties, left out of the agreement."),
        Option("tie_steps", 8,
               source="design choice: a logit stored in the low precision moves by up to one rounding step "
                      "(eps x |logit|; a binary classifier's two logits have no spread to judge by); 8 steps "
                      "allow for the rounding accumulated over the layers",
               help="Positions whose float32 top-two gap is under this many rounding steps of the low "
                    "dtype at the largest |logit| are near-ties too."),
        Option("near_overflow", 0.5,
               source="design choice: within 2x of the dtype's largest number a longer or unusual input "
                      "overflows (T5's float16 feed-forward, transformers #5651: 66246 > 65504)",
               help="Finite low-precision activations above this share of torch.finfo(dtype).max warn."),
        Option("growth_factor", 4.0,
               source="design choice: a correct model's KL stays flat with position (0.87-1.06x on a tiny "
                      "Llama at 512-2048 tokens); bfloat16 rotary angles gave it 18-25x",
               help="Mean KL of the last quarter of positions over the first eighth's needed to warn."),
        Option("trend_p", 0.01,
               source="design choice: one test per check, with a margin for positions averaged over few rows",
               help="Spearman p-value (KL rising with position) below which the trend counts."),
    )

    @torch.no_grad()
    def run(self, run):
        handle = run.model()
        param = next((p for p in handle.module.parameters() if p.is_floating_point()), None)
        if param is None:
            raise CheckSkipped("the model has no floating-point weights")
        low_dtype, named_by = low_precision(run, param.dtype)
        if low_dtype is None:
            raise CheckSkipped("the checkpoint is float32 and the run names no half precision: nothing to compare")
        idx = run.engine.probe_indices(run.eval_data, forwards=2, minimum=4, cap=int(self.opts["n_sequences"]))
        if idx.size == 0:
            raise CheckSkipped("no eval rows to probe")
        # one copy, in the precision the handle is not in: a half model's float32 copy is exact
        copy_dtype = torch.float32 if param.dtype == low_dtype else low_dtype
        if not _copy_fits(handle, copy_dtype):
            raise CheckSkipped(f"a {_name(copy_dtype)} copy of the model does not fit in the memory left")
        cmp, caps = _compare(run, handle, copy_dtype, low_dtype, idx, self.opts)
        return self._judge(cmp, caps, _name(low_dtype), named_by, int(idx.size))

    def _judge(self, cmp: "PrecisionCompare", caps, dt: str, named_by: str, rows: int) -> list:
        o, (low, ref) = self.opts, caps
        pos, kl, agree, decided, finite = (np.concatenate(x) for x in zip(*cmp.rows))
        overflow = [n for n, s in low.stats.items() if s[0] > 0 and ref.stats.get(n, [0])[0] == 0]
        # a module whose float32 output reaches float32's own limit holds a mask (finfo.min), no activation
        mask_like = 0.5 * torch.finfo(torch.float32).max
        real = {n: s for n, s in low.stats.items() if ref.stats.get(n, [0, 0.0])[1] < mask_like}
        worst, (_, big, _, _) = max(real.items(), key=lambda kv: kv[1][1], default=("", [0, 0.0, 0, 0]))
        near, seen = (sum(s[k] for s in real.values()) for k in (2, 3))
        agreement = float((agree & finite)[decided].mean()) if decided.any() else None
        ev: dict[str, Any] = {
            "low_dtype": dt, "dtype_named_by": named_by, "probe_rows": rows, "positions": int(pos.size),
            "decided_positions": int(decided.sum()), "top1_agreement": num(agreement),
            "mean_kl": num(np.nanmean(kl)) if finite.any() else None,
            "max_kl": num(np.nanmax(kl)) if finite.any() else None,
            "nonfinite_logit_positions": int((~finite).sum()), "overflow_modules": overflow[:5],
            "largest_activation": num(big), "largest_activation_module": worst,
            "headroom": num(torch.finfo(getattr(torch, dt)).max / big) if big > 0 else None,
            "near_overflow_share": num(near / max(1, seen))}
        ev.update(kl_trend(pos, kl, agree & finite, decided, o["trend_p"], o["growth_factor"]))
        if overflow or ev["nonfinite_logit_positions"]:
            where = overflow[0] if overflow else "the logits"
            return [self.finding(
                "error", f"In {dt} the model overflows: inf/NaN first appear in {where} on real tokens (float32 "
                f"stays finite there); {ev['nonfinite_logit_positions']} of {pos.size} positions get non-finite "
                "logits.", confidence=0.95, evidence=ev,
                fix=f"Run in bfloat16 (float32's range), keep {where} in float32 (transformers' "
                    "_keep_in_fp32_modules, as T5 keeps `wo`), or clamp its output.",
                next_experiment="Hook that module in both precisions and print its largest |output| per layer: "
                                "activations that grow layer by layer need a norm or a smaller init, not a clamp.")]
        if agreement is not None and agreement < o["min_agreement"]:
            return [self.finding(
                "error", f"In {dt} the model's top-1 predictions differ from its own float32 ones at "
                f"{1 - agreement:.1%} of {int(decided.sum())} decided positions (bound {1 - o['min_agreement']:.0%}): "
                "far beyond rounding, some op loses precision.", confidence=0.85, evidence=ev,
                fix="Evaluate in float32, or find the op computed in low precision (softmax, norm, rotary angles) "
                    "and upcast it.",
                next_experiment="Hook every module in both copies on one row: the first whose outputs differ by "
                                "far more than the dtype's epsilon is the culprit.")]
        out = []
        if ev["trend_grows"]:
            out.append(self.finding(
                "warning", f"In {dt} the divergence from float32 grows with position: mean KL is "
                f"{ev['kl_growth']:.3g}x larger in the last quarter of positions than in the first eighth "
                f"(Spearman rho {ev['trend_rho']:.2f}, p={ev['trend_p']:.2g}), though top-1 predictions mostly "
                "agree: the position encoding (rotary angles) is likely computed in low precision.",
                confidence=0.7, evidence=ev,
                fix="Compute rotary angles (inv_freq x position_ids) and their cos/sin in float32, then cast.",
                next_experiment="Compare the position encoding's cos/sin in both precisions at positions 0, 256, "
                                "1024 and 2048."))
        if near:
            out.append(self.finding(
                "warning", f"In {dt} activations of {worst} reach {big:.3g}, within {1 / o['near_overflow']:.0f}x "
                "of the dtype's largest number: longer or unusual inputs may overflow.", confidence=0.6,
                evidence=ev, fix=f"Run in bfloat16, keep {worst} in float32, or rescale it (a norm before it, "
                                 "a smaller init)."))
        return out


def low_precision(run, dtype: torch.dtype) -> tuple[torch.dtype | None, str]:
    """The half precision to compare with float32 and what named it: the weights' own dtype, else
    the config's dtype, else the recorded training arguments (mixed precision keeps float32 weights)."""
    if dtype in (torch.float16, torch.bfloat16):
        return dtype, "the checkpoint's weights"
    cfg = run.config if isinstance(run.config, Mapping) else {}
    for key in ("dtype", "torch_dtype"):
        if str(cfg.get(key)).removeprefix("torch.") in ("float16", "bfloat16"):
            return _HALF[str(cfg[key]).removeprefix("torch.")], f"config.json {key}"
    for key in ("bf16", "fp16"):
        if run.recorded_arg(key) is True:
            return _HALF[key], f"the recorded training arguments ({key}=True)"
    return None, ""


def _compare(run, handle, copy_dtype, low_dtype, idx, o) -> tuple["PrecisionCompare", tuple]:
    """Both precisions over the probe rows; the copy is dropped on return (the handle is untouched)."""
    try:
        other = dataclasses.replace(handle, module=_cast(copy.deepcopy(handle.module), copy_dtype))
    except Exception as e:  # noqa: BLE001 - a factory module that cannot be copied
        raise CheckSkipped(f"the model cannot be copied to {_name(copy_dtype)}: {type(e).__name__}: {e}")
    low, ref = (handle, other) if copy_dtype == torch.float32 else (other, handle)
    near = float(o["near_overflow"]) * torch.finfo(low_dtype).max
    caps = OverflowCapture(near), OverflowCapture(near)
    cmp = PrecisionCompare(PairedHandle(low, ref, caps[1], run.engine.meter), float(o["tie_gap"]),
                   float(o["tie_steps"]) * torch.finfo(low_dtype).eps)
    try:
        with caps[1].attached(ref.module):
            forward(cmp.pair, run.eval_data, idx, reducers=[cmp], captures=[caps[0]],
                    max_length=int(o["max_length"]), label="I313 low precision vs float32", meter=run.engine.meter)
    except (RuntimeError, NotImplementedError) as e:  # e.g. an op with no float16 kernel on this device
        raise CheckSkipped(f"the model cannot run in {_name(low_dtype)} here ({type(e).__name__}: {str(e)[:160]})")
    finally:
        cmp.pair = None  # let the copy and the last batch's logits go
    return cmp, caps


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`module` as if loaded in `dtype`: float32 casts everything (exact); a half precision casts the
    parameters and saved buffers, and buffers the model computes when built (rotary inv_freq) keep
    their dtype, as degrade and transformers leave them when loading a half checkpoint."""
    if dtype == torch.float32:
        return module.float()
    for m in module.modules():
        for n, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if t.is_floating_point() and n not in m._non_persistent_buffers_set:
                t.data = t.data.to(dtype)
    return module


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _copy_fits(handle, dtype: torch.dtype) -> bool:
    """Whether a copy of the weights in `dtype`, and a batch, fit in the memory left on the device."""
    from degrade.run.memory_need import FORWARD_BYTES, free_bytes
    tensors = list(handle.module.parameters()) + list(handle.module.buffers())
    need = sum(t.numel() for t in tensors) * torch.finfo(dtype).bits // 8 + FORWARD_BYTES
    device = torch.device(handle.device)
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else free_bytes()
    return free is None or need <= free
