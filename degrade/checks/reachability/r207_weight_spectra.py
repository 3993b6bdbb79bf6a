"""R207 weight-spectra: heavy-tailed exponent alpha of each layer's eigenvalue spectrum."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from degrade.check import Check, CheckSkipped
from degrade.checks.reachability import curves as C
from degrade.checks.reachability import weights as W
from degrade.layers import Layer
from degrade.option import Option

_SKIP = ("emb", "wte", "wpe", "lm_head", "tok.", "pos.")


def powerlaw_alpha(eigs: np.ndarray, min_tail: int = 10) -> tuple[float, float, int] | None:
    """Clauset, Shalizi & Newman (2009) continuous power-law fit of the ESD tail: for each
    candidate xmin, alpha = 1 + n / sum(ln(x / xmin)) (MLE) and the KS distance between the
    empirical and fitted tail CDFs; the xmin with the smallest KS distance wins.
    Returns (alpha, ks_distance, tail_size) or None when no tail has min_tail points."""
    x = np.sort(eigs[eigs > 0])
    best = None
    for i in range(0, max(x.size - min_tail, 0) + 1):
        tail = x[i:]
        xmin = tail[0]
        logs = np.log(tail / xmin)
        s = logs.sum()
        if s <= 0:
            continue
        n = tail.size
        alpha = 1 + n / s
        emp = np.arange(n) / n
        fit = 1 - (tail / xmin) ** (1 - alpha)
        ks = float(np.max(np.abs(emp - fit)))
        if best is None or ks < best[1]:
            best = (float(alpha), ks, n)
    return best


class WeightSpectra(Check):
    """Layers whose weight spectrum looks under-trained (heavy-tailed exponent alpha > 6).

    What it detects: for each weight matrix of the final model outside the embeddings, the
    eigenvalues of W^T W / N (the empirical spectral density, ESD) and the exponent alpha of a
    power law fitted to its tail (Clauset-Shalizi-Newman MLE with the xmin that minimises the KS
    distance), as WeightWatcher does (Martin & Mahoney). WeightWatcher reads alpha < 2 as
    over-trained and alpha > 6 as under-trained (its constants.py; ANCHORS.md); a random
    (untrained) matrix has a Marchenko-Pastur bulk and no heavy tail, which fits a large alpha.
      - warning: at least `min_flagged_fraction` of the fitted layers have alpha > `max_alpha`
        (the model as a whole looks under-trained);
      - info: some layers have alpha > max_alpha, or all look fine (the alphas are listed).
    Never an error by itself: the caveats below make alpha weak evidence alone; R201/R206 carry
    under-training errors and this check corroborates them.

    Caveats: the fit needs many eigenvalues — matrices with fewer than `min_eigenvalues`
    (WeightWatcher: 50) are skipped and listed; small matrices give spurious fits (the KS distance
    of each fit is reported: above ~0.1 the power law is a poor description); WeightWatcher users
    report spurious alphas and silently skipped layers, so every skipped layer is named here.

    Why it matters: training imprints correlations into weight matrices, which shows as a heavy
    ESD tail; a layer that kept a random-like spectrum has learned little.

    Evidence used: the final checkpoint's weights (no data needed).

    Fix: train longer or with a larger learning rate (see R201/R206), or check that the layer gets
    gradient (R204).
    """

    code, name, layer = "R207", "weight-spectra", Layer.REACHABILITY
    needs = frozenset({"weights"})
    options = (
        Option("max_alpha", 6.0,
               source="WeightWatcher constants.py (Martin & Mahoney): alpha > 6 is under-trained",
               help="A layer whose fitted power-law exponent exceeds this looks under-trained."),
        Option("min_eigenvalues", 50,
               source="WeightWatcher: minimum ESD size for a fit",
               help="Matrices with fewer eigenvalues are skipped (and named in the evidence)."),
        Option("min_flagged_fraction", 0.5,
               source="design choice: half of the fitted layers, read as the model as a whole looking "
                      "under-trained",
               help="Fraction of fitted layers with alpha > max_alpha for a warning."),
        Option("max_matrices", 200,
               source="design choice: bounds the cost (each matrix costs an SVD); the number is "
                      "chosen by hand",
               help="Matrices fitted at most (an evenly spaced subset beyond)."),
    )

    def run(self, run):
        o = self.opts
        state = W.of_model(run)
        fitted, skipped = {}, []
        candidates = [n for n in state if len(state.info(n).shape) == 2 and state.is_float(n)
                      and not any(s in n.lower() for s in _SKIP)]
        if len(candidates) > o["max_matrices"]:  # an SVD each: cap the cost on large models
            keep = set(candidates[:: -(-len(candidates) // o["max_matrices"])])
            skipped.append(f"{len(candidates) - len(keep)} matrices beyond max_matrices "
                           f"({o['max_matrices']}; an evenly spaced subset was fitted)")
            candidates = [n for n in candidates if n in keep]
        for name in candidates:
            t = state[name]
            n_eigs = min(t.shape)
            if n_eigs < o["min_eigenvalues"]:
                skipped.append(f"{name} ({n_eigs} eigenvalues)")
                continue
            m = t.double()
            n_rows = max(t.shape)
            eigs = (torch.linalg.svdvals(m) ** 2 / n_rows).numpy()
            fit = powerlaw_alpha(eigs)
            if fit is None:
                skipped.append(f"{name} (tail too short to fit)")
                continue
            fitted[name] = {"alpha": C.num(fit[0], 3), "ks": C.num(fit[1], 3), "tail": fit[2],
                            "eigenvalues": n_eigs}
        if not fitted:
            raise CheckSkipped(f"no weight matrix has >= {o['min_eigenvalues']} eigenvalues "
                               f"(WeightWatcher's minimum); skipped: {', '.join(skipped[:5])}")
        high = sorted(n for n, f in fitted.items() if f["alpha"] is not None and f["alpha"] > o["max_alpha"])
        frac = len(high) / len(fitted)
        ev: dict[str, Any] = {"layers": fitted, "skipped_layers": skipped, "under_trained": high,
                              "under_trained_fraction": C.num(frac, 3),
                              "median_alpha": C.num(float(np.median([f["alpha"] for f in fitted.values()])), 3)}
        nxt = "Compare with R201/R206: if the loss is still falling or the LR is off, fix that first, then re-read the alphas."
        if frac >= o["min_flagged_fraction"]:
            return [self.finding("warning", f"{len(high)} of {len(fitted)} weight matrices have a "
                                 f"spectral exponent alpha > {o['max_alpha']:g} (WeightWatcher's "
                                 "under-trained bound): their spectra still look random.",
                                 confidence=0.4, evidence=ev,
                                 fix="Train longer or with a larger LR (see R201/R206); check R204.",
                                 next_experiment=nxt)]
        return [self.finding("info", f"Spectral exponents of {len(fitted)} weight matrices: median "
                             f"alpha {ev['median_alpha']}; {len(high)} above {o['max_alpha']:g}; "
                             f"{len(skipped)} matrices too small to fit.", confidence=0.4,
                             evidence=ev, fix="None needed.", next_experiment=nxt)]
