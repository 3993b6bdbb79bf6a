"""Metric modules shipped inside degrade: `evaluate.load("accuracy")` would fetch a script from the
Hub, which is neither possible offline nor safe. Load these by local path with `load_metric()`."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent


def load_metric(name: str):
    import evaluate
    path = HERE / name / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"degrade ships no metric {name!r}; available: "
                         f"{', '.join(sorted(p.name for p in HERE.iterdir() if (p / (p.name + '.py')).is_file()))}")
    return evaluate.load(str(path))
