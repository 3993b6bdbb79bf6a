"""Whether the model gives one answer per input in eval mode: the precondition of every check that
compares two forwards (a perturbation and its reference). A model that draws random numbers in eval
mode (dropout that ignores model.eval(): I309 reports it) makes each such comparison measure its own
noise, so those checks skip with the reason instead of reading the noise as a leak or a bug."""
from __future__ import annotations

import numpy as np
import torch

from degrade.check import CheckSkipped
from degrade.engine.forward import forward

RTOL = 1e-4  # as I309's rtol: float32 re-runs of one batch differ by 0 on CPU, ~1e-6 on GPU
PROBE_ROWS = 4


class Fingerprint:
    """Per example: float64 sum and sum of squares of its logits, and the argmax per position."""

    def __init__(self, idx: np.ndarray):
        self.sums = np.zeros((len(idx), 2))
        self.row = {int(i): k for k, i in enumerate(idx)}
        self.argmax: dict[int, np.ndarray] = {}

    @torch.no_grad()
    def add(self, idx, ids, mask, labels, logits) -> None:
        x = logits.double()
        if x.dim() == 3:  # [B, T, V]: only the real tokens' positions
            keep = mask.bool().to(x.device)[..., None]
            x = torch.where(keep, x, torch.zeros_like(x))
        flat = x.reshape(x.shape[0], -1)
        s, q = flat.sum(1).cpu().numpy(), (flat * flat).sum(1).cpu().numpy()
        am = logits.argmax(-1).cpu().numpy()
        for r, e in enumerate(idx):
            k = self.row[int(e)]
            self.sums[k] = (s[r], q[r])
            n = int(mask[r].sum()) if logits.dim() == 3 else None
            self.argmax[k] = am[r][:n] if n is not None else np.atleast_1d(am[r])


def require_deterministic(run) -> None:
    """Raise CheckSkipped when two eval-mode forwards of the same few eval rows disagree (cached)."""
    cache = run.engine._cache
    if "deterministic" not in cache:
        data = run.eval_data
        idx = np.arange(min(PROBE_ROWS, len(data)))
        passes = []
        for seed in (run.options.seed, run.options.seed + 1):
            fp = Fingerprint(idx)
            for i in idx:  # one row per batch, both times: a model that depends on its batch (padding,
                # a softmax over the batch) is not random, and is for the comparing checks to find
                forward(run.model(), data, np.asarray([i]), reducers=[fp], torch_seed=seed + int(i),
                        label="eval-mode repeat", meter=run.engine.meter)
            passes.append(fp.sums)
        a, b = passes
        # inf/NaN in the same places is the same answer (an overflowing model is deterministic)
        cache["deterministic"] = bool(np.allclose(a, b, rtol=RTOL, atol=0.0, equal_nan=True))
    if not cache["deterministic"]:
        raise CheckSkipped("the model gives different outputs for the same input in eval mode (I309): "
                           "comparing two of its forwards would measure that noise")
