"""Reading RUN/degrade/layers.jsonl (what record/layer_stats.py writes) into arrays, without torch:
the history-only checks (R206, R211) read it in diagnoses that load no model."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

ACTIVATION_KEYS = ("mean", "std", "frac_zero", "max_abs")
PARAM_KEYS = ("grad_norm", "weight_norm", "update_ratio")


@dataclass
class LayerStats:
    """layers.jsonl as arrays: params[name][stat] and activations[module][stat] are float arrays
    aligned with `steps` (NaN where a record lacks the value)."""

    steps: np.ndarray
    params: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    activations: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return len(self.steps) > 0


def read_layer_stats(native_dir: str | Path) -> LayerStats | None:
    """RUN/degrade/layers.jsonl as a LayerStats, or None when the run has none."""
    from degrade.inputs.native import layer_records
    path = Path(native_dir) / "layers.jsonl"
    if not path.exists():
        return None
    records = layer_records(path, Path(native_dir).parent)
    records.sort(key=lambda r: r["step"])
    steps = np.asarray([float(r["step"]) for r in records])
    return LayerStats(steps, _columns(records, "params", PARAM_KEYS),
                      _columns(records, "activations", ACTIVATION_KEYS))


def _columns(records: list[dict], key: str, stats: Iterable[str]) -> dict[str, dict[str, np.ndarray]]:
    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r.get(key) or {}))
    out = {}
    for name in names:
        cols = {}
        for s in stats:
            vals = []
            for r in records:
                v = ((r.get(key) or {}).get(name) or {}).get(s)
                vals.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan)
            cols[s] = np.asarray(vals)
        out[name] = cols
    return out
