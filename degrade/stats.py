"""Small statistics every layer's checks share: evidence numbers and paired differences."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def num(x: Any, digits: int = 4) -> float | None:
    """A JSON-friendly float rounded to `digits` significant digits (None for None, NaN and inf)."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of a - b over the same examples and its standard error (examples are the independent
    units); an infinite SE when fewer than two examples."""
    d = a - b
    if d.size < 2:
        return float(d.mean()) if d.size else 0.0, float("inf")
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))
