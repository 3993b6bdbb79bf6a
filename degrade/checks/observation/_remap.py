"""Systematic disagreements between predictions and labels (shared by O104 and O107).

Two remappings are tested, each out of sample so that noise cannot be fitted:
- a permutation of the label ids: fitted on one half of the targets (the assignment that maximises
  agreement on the confusion matrix, Hungarian algorithm), scored on the other half, and the other
  way round (two-fold). A permutation is one-to-one, so a constant predictor gains nothing.
- (causal LMs) another alignment of predictions and labels: the argmax at position t compared with
  the label at t (offset 0) or t+2 instead of t+1, i.e. labels shifted once too often or too rarely.
A remapping that makes many more targets agree than the plain comparison means the model gets the
answer and the metric does not credit it.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from degrade.checks.observation._stats import num, z_test
from degrade.run.data import IGNORE_INDEX

MAX_REMAP_CLASSES = 512


def permutation_gain(given: np.ndarray, pred: np.ndarray, seed: int = 0) -> dict[str, Any] | None:
    from scipy.optimize import linear_sum_assignment
    m = given.size
    if m < 20:
        return None
    rng = np.random.default_rng(seed)
    fold = rng.permutation(m) % 2
    classes, counts = np.unique(np.concatenate([given, pred]), return_counts=True)
    if classes.size > MAX_REMAP_CLASSES:
        classes = classes[np.argsort(-counts)[:MAX_REMAP_CLASSES]]
    pos = {int(c): k for k, c in enumerate(classes)}
    gain = np.zeros(m)
    mapped_hit = np.zeros(m, dtype=bool)
    mappings = []
    for f in (0, 1):
        fit, test = fold == f, fold != f
        conf = np.zeros((classes.size, classes.size))
        for g, p in zip(given[fit], pred[fit]):
            if int(g) in pos and int(p) in pos:
                conf[pos[int(g)], pos[int(p)]] += 1
        rows, cols = linear_sum_assignment(-conf)
        # The whole assignment, zero-count pairs included: dropping those (and keeping the label
        # itself there) makes the map many-to-one, and a constant predictor then "gains" every
        # target (given 0 -> 1 fitted, given 1 -> 1 kept: all right).
        pi = {int(classes[r]): int(classes[c]) for r, c in zip(rows, cols)}
        mapped = np.array([pi.get(int(g), int(g)) for g in given[test]])
        mapped_hit[test] = mapped == pred[test]
        gain[test] = mapped_hit[test].astype(float) - (given[test] == pred[test])
        mappings.append(pi)
    plain = float((given == pred).mean())
    remapped = float(mapped_hit.mean())
    _, se = _mean_se(gain)
    z = _z(float(gain.mean()), se)
    moved = {g: p for g, p in mappings[0].items() if g != p and mappings[1].get(g) == p}
    return {"kind": "label permutation", "plain_accuracy": num(plain, 4),
            "remapped_accuracy": num(remapped, 4), "gain": num(remapped - plain, 4),
            "z": num(z, 3) if math.isfinite(z) else None, "n_targets": int(m),
            "stable_moved_labels": {str(k): v for k, v in list(sorted(moved.items()))[:12]},
            "n_stable_moved_labels": len(moved)}


def offset_gain(rows_pred: dict[int, np.ndarray], rows_label: dict[int, np.ndarray],
                rows_input: dict[int, np.ndarray] | None = None) -> dict[str, Any] | None:
    """Per example: token accuracy with the standard alignment (argmax at t vs label at t+1) and
    with offsets 0 and 2; the best offset's paired gain.

    At offset 0 a label equal to the input token at t is not evidence of a shift: agreeing with it
    is merely echoing the current input (what a tied-embedding LM does at positions it was never
    trained to predict from). With rows_input given, such targets are left out at offset 0: labels
    shifted once too often (label t = input t+1) still show, an echo does not."""
    per: dict[int, list[float]] = {0: [], 1: [], 2: []}
    counts: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for e, pred in rows_pred.items():
        lab = rows_label[e]
        for d in (0, 1, 2):
            n = min(pred.size, lab.size - d)
            if n <= 0:
                per[d].append(0.0)
                counts[d].append(0)
                continue
            y = lab[d:d + n]
            valid = y != IGNORE_INDEX
            if d == 0 and rows_input is not None and e in rows_input:
                valid &= y != rows_input[e][:n]
            per[d].append(float(((pred[:n] == y) & valid).sum()))
            counts[d].append(int(valid.sum()))
    out: dict[str, Any] = {"kind": "label alignment"}
    base_hits, base_n = np.asarray(per[1]), np.asarray(counts[1], float)
    if base_n.sum() == 0:
        return None
    base = float(base_hits.sum() / base_n.sum())
    best = None
    for d in (0, 2):
        hits, n = np.asarray(per[d]), np.asarray(counts[d], float)
        if n.sum() == 0:
            continue
        acc = float(hits.sum() / n.sum())
        # Per-example paired difference of accuracies (examples with targets under both).
        both = (n > 0) & (base_n > 0)
        diff = hits[both] / n[both] - base_hits[both] / base_n[both]
        _, se = _mean_se(diff)
        z = _z(float(diff.mean()) if diff.size else 0.0, se)
        out[f"accuracy_offset_{d}"] = num(acc, 4)
        if best is None or acc > best[1]:
            best = (d, acc, z)
    out["plain_accuracy"] = num(base, 4)
    if best is None:
        return None
    out.update({"best_offset": best[0], "remapped_accuracy": num(best[1], 4),
                "gain": num(best[1] - base, 4), "z": num(best[2], 3) if math.isfinite(best[2]) else None,
                "note": "offset 1 is the standard causal-LM alignment (logits at t predict label t+1)"})
    return out


def best_remap(targets, seed: int = 0) -> dict[str, Any] | None:
    """The remapping (permutation or alignment) with the largest out-of-sample gain."""
    found = [permutation_gain(targets.given, targets.pred, seed)]
    if targets.rows_pred is not None:
        found.append(offset_gain(targets.rows_pred, targets.rows_label,
                                 getattr(targets, "rows_input", None)))
    found = [f for f in found if f is not None and f.get("gain") is not None]
    return max(found, key=lambda f: f["gain"]) if found else None


def _z(mean: float, se: float) -> float:
    """z of a paired mean difference; a difference without spread (every item gains) is certain."""
    if se == 0 or not math.isfinite(se):
        return 99.0 if mean > 0 and se == 0 else 0.0
    return z_test(mean, se)[0]


def _mean_se(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, float)
    if x.size < 2:
        return (float(x.mean()) if x.size else float("nan")), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))
