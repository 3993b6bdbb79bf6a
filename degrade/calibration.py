"""Calibrated confidence: the probability that the layer a finding (or the verdict) names is truly
degraded.

A check reports a raw confidence, its own strength of evidence. What that number is worth is
measured, not assumed: on DegradeBench v2's calibration split (never its test split) every error
finding is labelled by whether the case's injected fault sits in the finding's layer (findings in
layers inside the faulty one are left out: the backward walk never reaches them there, so the
probability is that of the layer being degraded given the layers outside it are clean), and the raw
confidences are mapped to probabilities by Platt scaling (Platt 1999: a logistic regression on
logit(raw)), per check code, shrunk towards its layer's map, which is shrunk towards the identity:
a code seen a few times on the split keeps its layer's map, a layer seen a few times keeps the raw
number (hierarchical, as empirical Bayes would); how strongly, at each of the two levels, is chosen
by leave-one-case-out likelihood on the split. The verdict's confidence is the same kind of
probability: its raw value (the top finding's calibrated confidence, discounted for outer layers
that could not be cleared; for `none`, the share of checks that ran) mapped by a Platt map of "the
verdict's layer is right" on it, fitted on the same split and shrunk to the identity as strongly
as leave-one-out likelihood chooses (with a few dozen verdicts, an isotonic fit's steps would be
the split's noise).

The maps live in degrade/calibration.json with what they were fitted on; `degrade bench
--fit-calibration` writes it (finding maps first, then the calibration split diagnosed again with
them in place for the verdict map). Without the file (or for a code it does not know) the
raw confidence passes through unchanged. A layer is degraded when an error's calibrated
confidence passes the gate (0.5: more likely degraded than not).
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from degrade.layers import WALK

PATH = Path(__file__).with_name("calibration.json")
# What the verdict's confidence means, in the words every report prints next to it.
MEANING = ("confidence: the probability that this verdict's layer is the right one, calibrated on "
           "DegradeBench v2's calibration split")
# Pseudo-observations pulling a code to its layer's map and a layer to the identity: chosen among
# these by leave-one-case-out likelihood on the split (fit_findings), not by hand.
SHRINK_GRID = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
# A code's own fit may not pull harder than this many pseudo-observations towards its layer's map:
# on a split of a few dozen cases most codes fire once or twice, and leave-one-case-out then
# rewards fitting those one or two cases (it chose 1 on the committed split, which sent R201 from
# 0.7 to 0.36 on two findings while the dev split shows it right on half of its errors).
MIN_CODE_SHRINK = 5.0
EPS = 1e-4


def _logit(p: float) -> float:
    p = min(max(float(p), EPS), 1 - EPS)
    return math.log(p / (1 - p))


@lru_cache(maxsize=1)
def _maps(path: str = str(PATH)) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def finding_probability(code: str, layer: str, raw: float, maps: dict[str, Any] | None = None) -> float:
    m = _maps() if maps is None else maps
    ab = (m.get("codes") or {}).get(code) or (m.get("layers") or {}).get(layer)
    if not ab:
        return float(raw)
    a, b = ab
    return 1.0 / (1.0 + math.exp(-(a * _logit(raw) + b)))


def verdict_probability(raw: float, maps: dict[str, Any] | None = None) -> float:
    m = _maps() if maps is None else maps
    ab = m.get("verdict")
    if not ab:
        return float(raw)
    return 1.0 / (1.0 + math.exp(-(ab[0] * _logit(raw) + ab[1])))


def calibrate(results) -> None:
    """Replace every error finding's confidence by its calibrated probability (raw kept)."""
    for r in results:
        for f in r.findings:
            if f.is_error:
                f.confidence = round(finding_probability(f.code, f.layer.value, f.raw_confidence), 4)


# ---- fitting (degrade bench --fit-calibration) ------------------------------------------------
def _platt(x: np.ndarray, y: np.ndarray, prior: tuple[float, float], weight: float) -> tuple[float, float]:
    """(a, b) maximising the log-likelihood of y ~ sigmoid(a x + b) minus a Gaussian pull of
    `weight` pseudo-observations towards `prior`."""
    from scipy.optimize import minimize

    def loss(ab):
        z = ab[0] * x + ab[1]
        nll = np.sum(np.logaddexp(0, z) - y * z)
        return nll + 0.5 * weight * ((ab[0] - prior[0]) ** 2 + (ab[1] - prior[1]) ** 2)
    res = minimize(loss, np.asarray(prior, float), method="L-BFGS-B")
    return float(res.x[0]), float(res.x[1])


def fit_findings(outcomes: list) -> dict[str, Any]:
    """Per-layer and per-code Platt maps from bench outcomes' error findings (raw confidences),
    with the shrinkage chosen by leave-one-case-out log-likelihood."""
    rows = [(o.name, f["code"], f["layer"], f.get("raw_confidence", f["confidence"]), o.expected_layer == f["layer"])
            for o in outcomes if not o.error for f in o.findings
            if f["severity"] == "error" and not _inside_the_fault(f["layer"], o.expected_layer)]
    cases = sorted({r[0] for r in rows})

    def held_out_loglik(weights: tuple[float, float]) -> float:
        total = 0.0
        for case in cases:
            maps = _fit([r for r in rows if r[0] != case], *weights)
            for _, code, layer, raw, hit in (r for r in rows if r[0] == case):
                p = min(max(finding_probability(code, layer, raw, maps), EPS), 1 - EPS)
                total += math.log(p if hit else 1 - p)
        return total
    grid = [(lw, cw) for lw in SHRINK_GRID for cw in SHRINK_GRID if cw >= MIN_CODE_SHRINK]
    weights = max(grid, key=held_out_loglik) if len(cases) > 1 else (SHRINK_GRID[-1],) * 2
    return {"findings": len(rows), "shrink": {"layer_to_identity": weights[0], "code_to_layer": weights[1]},
            **_fit(rows, *weights)}


def _inside_the_fault(layer: str, expected: str) -> bool:
    """A finding in a layer inside the case's degraded one: the backward walk stops at the outer
    layer, so this finding never decides a verdict there; whether it is "right" is not what its
    confidence is for (the probability that its layer is degraded given the layers outside it are
    clean). Left out of the fit."""
    names = [w.value for w in WALK]
    return expected in names and layer in names and names.index(expected) < names.index(layer)


def _fit(rows: list[tuple], layer_weight: float, code_weight: float) -> dict[str, Any]:
    layers, codes = {}, {}
    for layer in sorted({r[2] for r in rows}):
        mine = [r for r in rows if r[2] == layer]
        x, y = np.array([_logit(r[3]) for r in mine]), np.array([float(r[4]) for r in mine])
        layers[layer] = _platt(x, y, (1.0, 0.0), layer_weight)
        for code in sorted({r[1] for r in mine}):
            cm = [r for r in mine if r[1] == code]
            xc, yc = np.array([_logit(r[3]) for r in cm]), np.array([float(r[4]) for r in cm])
            codes[code] = _platt(xc, yc, layers[layer], code_weight)
    return {"layers": layers, "codes": codes}


def fit_verdict(outcomes: list) -> dict[str, Any]:
    """The Platt map of the verdict's raw confidence to its hit rate (diagnosed with the finding
    maps in place)."""
    kept = [o for o in outcomes if not o.error]
    raw = np.array([_logit(o.raw_confidence if o.raw_confidence is not None else o.confidence or 0.0)
                    for o in kept])
    hit = np.array([float(o.layer_hit) for o in kept])
    if raw.size < 2:
        return {"verdicts": int(raw.size), "verdict": None}

    def held_out_loglik(weight: float) -> float:
        total = 0.0
        for i in range(raw.size):
            keep = np.arange(raw.size) != i
            a, b = _platt(raw[keep], hit[keep], (1.0, 0.0), weight)
            p = min(max(1.0 / (1.0 + math.exp(-(a * raw[i] + b))), EPS), 1 - EPS)
            total += math.log(p if hit[i] else 1 - p)
        return total
    weight = max(SHRINK_GRID, key=held_out_loglik)
    return {"verdicts": int(raw.size), "verdict_shrink": weight, "verdict": _platt(raw, hit, (1.0, 0.0), weight)}

