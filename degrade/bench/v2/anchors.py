"""The published curve heuristics, run on the same cases as degrade (shared/ANCHORS.md):

- exploding (AUTOTRAINER): a NaN or infinite training loss;
- diverging (ANCHORS.md "loss diverging"): the last training loss >= 2x the minimum reached;
- not decreasing (ANCHORS.md, AUTOTRAINER's slow convergence): < 5% drop from the first to the
  last training loss;
- overfitting (UMLAUT): the best eval loss lies in the first 70% of the run and the last one is
  >= 10% above it while the training loss kept falling.

These tools name a training problem, never a layer: any flag counts as a `reachability`
verdict, none as `none`. They read only the logs (trainer_state.json, or the Recorder's
scalars.jsonl), as a user of those tools would.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from degrade.bench.v2.scorecard import wilson


def curves(run_dir: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(train loss, eval loss) as [(step, value)]."""
    state, scalars = Path(run_dir) / "trainer_state.json", Path(run_dir) / "degrade" / "scalars.jsonl"
    if state.is_file():
        recs = json.loads(state.read_text())["log_history"]
    elif scalars.is_file():
        recs = [json.loads(line) for line in scalars.read_text().splitlines() if line.strip()]
    else:
        return [], []
    train = [(r["step"], float(r["loss"])) for r in recs if "loss" in r and "step" in r]
    evals = [(r["step"], float(r["eval_loss"])) for r in recs if "eval_loss" in r and "step" in r]
    return train, evals


def flags(run_dir: Path) -> list[str]:
    train, evals = curves(run_dir)
    out = []
    values = [v for _, v in train]
    if any(not math.isfinite(v) for v in values):
        out.append("exploding")
    finite = [v for v in values if math.isfinite(v)]
    if finite and finite[-1] >= 2 * min(finite):
        out.append("diverging")
    if len(finite) >= 2 and finite[-1] > 0.95 * finite[0]:
        out.append("not-decreasing")
    ev = [(s, v) for s, v in evals if math.isfinite(v)]
    if len(ev) >= 3:
        best = min(range(len(ev)), key=lambda i: ev[i][1])
        span = ev[-1][0] - ev[0][0]
        falling = [v for s, v in train if s >= ev[best][0] and math.isfinite(v)]
        if (ev[best][0] - ev[0][0] <= 0.7 * span and ev[-1][1] >= 1.1 * ev[best][1]
                and len(falling) >= 2 and falling[-1] < falling[0]):
            out.append("overfitting")
    return out


def side_by_side(cases, outcomes, judged: dict, cache: Path, split: str = "test") -> dict[str, Any]:
    """The anchors' verdicts on the scored cases of `split`, next to degrade's, in the same terms."""
    rows = []
    for c, o in zip(cases, outcomes):
        if c.split != split or not judged[c.name][0]:  # degrade's errors stay in: they are misses
            continue
        f = flags(Path(cache) / c.name / "run")
        rows.append({"name": c.name, "expected": c.layer, "anchor_flags": f,
                     "anchor_layer": "reachability" if f else "none", "degrade_layer": o.predicted_layer})

    def summary(key: str) -> dict[str, Any]:
        hits = sum(r[key] == r["expected"] for r in rows)
        healthy = [r for r in rows if r["expected"] == "none"]
        reach = [r for r in rows if r["expected"] == "reachability"]
        return {"layer_top1": round(hits / len(rows), 4) if rows else None, "layer_top1_ci": wilson(hits, len(rows)),
                "false_alarm_rate": round(sum(r[key] not in ("none", "error") for r in healthy) / len(healthy), 4) if healthy else None,
                "reachability_recall": round(sum(r[key] == "reachability" for r in reach) / len(reach), 4) if reach else None}
    return {"split": split, "n": len(rows), "curve_heuristics": summary("anchor_layer"),
            "degrade": summary("degrade_layer"), "cases": rows}
