"""Running one model in two precisions over the same batches (I313): a paired handle that runs
the float32 reference beside the low-precision model, hooks that count overflow per module, the
per-position comparison of their logits, and the trend of the divergence with position."""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from degrade.engine.batching import CHUNK_BYTES
from degrade.stats import num


class PairedHandle:
    """The low-precision handle whose every batch the float32 handle also runs: forward() sees one
    model, and the reducer compares both logits batch by batch (no [rows, T, vocab] store)."""

    def __init__(self, low, ref, ref_capture: "OverflowCapture", meter):
        self.low, self.ref, self.cap, self.meter, self.module = low, ref, ref_capture, meter, low.module
        self.ref_logits: torch.Tensor | None = None

    @property
    def out_size(self):  # two models' logits per batch: batches sized as for twice the vocabulary
        n = self.low.out_size
        return None if n is None else 2 * n

    def logits(self, ids, mask, source=None):
        self.cap.batch(mask)
        self.ref_logits = self.ref.logits(ids, mask, source=source)
        if self.meter is not None:  # the reference is a forward too: counted like the low one
            self.meter.tick("I313 float32 reference", int(ids.numel()), False, 0, 0, 0.0)
        return self.low.logits(ids, mask, source=source)


class OverflowCapture:
    """Per module name, in the order outputs first appear: [non-finite values, largest finite
    |value|, values above `near`, values seen], on real tokens where the output is [B, T, ...]."""

    def __init__(self, near: float):
        self.near, self.mask, self.stats = near, None, {}

    def batch(self, mask: torch.Tensor) -> None:
        self.mask = mask

    @contextmanager
    def attached(self, module: torch.nn.Module):
        hooks = [m.register_forward_hook(self._hook(n)) for n, m in module.named_modules() if n]
        try:
            yield
        finally:
            for h in hooks:
                h.remove()

    def _hook(self, name: str):
        def hook(_module, _inputs, out):
            items = out.values() if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else [out]
            for t in items:
                if not (isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()):
                    continue
                m = self.mask
                if m is not None and t.dim() >= 2 and tuple(t.shape[:2]) == tuple(m.shape):
                    t = t[m.to(t.device).bool()]  # real tokens only: pads may hold anything
                fin = torch.isfinite(t)
                a = t.abs().masked_fill_(~fin, 0)
                s = self.stats.setdefault(name, [0, 0.0, 0, 0])
                s[0] += int((~fin).sum())
                s[1] = max(s[1], float(a.max()) if a.numel() else 0.0)
                s[2] += int((a > self.near).sum())
                s[3] += int(t.numel())
        return hook


class PrecisionCompare:
    """Per real position of each probe row: KL(float32 || low), top-1 agreement, whether float32's
    top two logits are no near-tie (`tie_gap` of the logits' std, `tie_steps` rounding steps), and
    whether the low precision's logits are finite."""

    def __init__(self, pair: PairedHandle, tie_gap: float, tie_eps: float):
        self.pair, self.tie_gap, self.tie_eps, self.rows = pair, tie_gap, tie_eps, []

    @torch.no_grad()
    def add(self, idx, ids, mask, labels, logits) -> None:
        ref = self.pair.ref_logits
        if logits.dim() == 2:  # a classifier: one position per row
            ref, logits, mask = ref[:, None], logits[:, None], torch.ones(len(idx), 1)
        step = max(1, CHUNK_BYTES // (4 * logits.shape[-1]))  # vocabulary-wide temporaries stay small
        for r in range(len(idx)):
            keep = mask[r].bool() & torch.isfinite(ref[r]).all(-1).cpu()  # float32 non-finite: no precision issue
            for s in range(0, int(keep.shape[0]), step):
                k = keep[s:s + step]
                if k.any():
                    self._chunk(s + torch.nonzero(k).flatten(), ref[r, s:s + step][k.to(ref.device)].float(),
                                logits[r, s:s + step][k.to(logits.device)].float())

    def _chunk(self, pos: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
        finite = torch.isfinite(b).all(-1)
        lp, lq = a.log_softmax(-1), b.log_softmax(-1)
        kl = (lp.exp() * (lp - lq)).sum(-1).clamp(min=0)
        top = a.topk(min(2, a.shape[-1]), -1).values
        gap = top[:, 0] - top[:, -1]
        decided = (gap > self.tie_gap * a.std(-1, correction=0)) & (gap > self.tie_eps * a.abs().amax(-1))
        self.rows.append((pos.numpy(), torch.where(finite, kl, torch.nan).cpu().numpy(),
                          (a.argmax(-1) == b.argmax(-1)).cpu().numpy(), decided.cpu().numpy(), finite.cpu().numpy()))


def kl_trend(pos: np.ndarray, kl: np.ndarray, agree: np.ndarray, decided: np.ndarray, alpha: float,
           factor: float) -> dict[str, Any]:
    """Mean KL and agreement per quarter of the position range, and whether KL rises with position:
    Spearman's rho over positions (KL averaged over rows) above 0 at p < alpha, and the last
    quarter's mean KL `factor` times the first eighth's (bfloat16 holds positions exactly up to
    256, so a rotary error starts inside the first quarter of 2k-token rows, past their first eighth)."""
    ok, top = np.isfinite(kl), int(pos.max()) + 1 if pos.size else 1
    q = np.minimum(pos * 4 // top, 3)
    out: dict[str, Any] = {"trend_rho": None, "trend_p": None, "kl_growth": None, "trend_grows": False,
                           "by_position": [{"positions": f"{k * top // 4}-{(k + 1) * top // 4 - 1}",
                                            "mean_kl": num(kl[(q == k) & ok].mean()) if ((q == k) & ok).any() else None,
                                            "top1_agreement": num(agree[(q == k) & decided].mean())
                                            if ((q == k) & decided).any() else None} for k in range(4)]}
    at = np.unique(pos[ok])
    per = (np.bincount(pos[ok], weights=kl[ok]) / np.maximum(np.bincount(pos[ok]), 1))[at] if ok.any() else at
    if at.size < 8 or np.ptp(per) == 0 or not ((at < top / 8).any() and (at >= 3 * top / 4).any()):
        return out  # no trend to fit (a classifier has one position)
    from scipy.stats import spearmanr
    res = spearmanr(at, per)
    first, last = per[at < top / 8].mean(), per[at >= 3 * top / 4].mean()
    growth = last / first if first > 0 else (np.inf if last > 0 else 1.0)
    out.update(trend_rho=num(res.statistic), trend_p=num(res.pvalue), kl_growth=num(min(growth, 1e12)),
               trend_grows=bool(res.statistic > 0 and res.pvalue < alpha and growth >= factor))
    return out
