"""A side-by-side with WeightWatcher (Martin & Mahoney) on the same bench runs.

WeightWatcher fits a power law to each layer's weight eigenvalue spectrum, needs no data, and
labels a layer "under-trained" when its exponent alpha > 6 and "over-trained" when alpha < 2
(weightwatcher/constants.py: UNDER_TRAINED_THRESH = 6.0, OVER_TRAINED_THRESH = 2.0; its README
and shared/ANCHORS.md). We run its `analyze()` with its defaults on each case's final model and
label the run with the documented per-layer rule, two ways:

- any: the run is flagged when any analysed layer carries a label (WeightWatcher's own warnings);
- majority: flagged when at least half of the analysed layers carry the same label.

Then: how many reachability faults its labels catch, and how many healthy runs it flags. It is an
optional extra (`pip install degrade[bench]`); without it the side-by-side is skipped with a reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from degrade.bench.case import Case
from degrade.bench.runner import quiet

UNDER_TRAINED_ALPHA = 6.0  # weightwatcher constants.UNDER_TRAINED_THRESH
OVER_TRAINED_ALPHA = 2.0  # weightwatcher constants.OVER_TRAINED_THRESH


def unavailable() -> str | None:
    """Why the side-by-side cannot run here, or None."""
    try:
        with quiet():  # it prints about CUDA and SVD backends on import
            import weightwatcher  # noqa: F401
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken optional dependency
        return f"weightwatcher is not installed (pip install 'degrade[bench]'): {type(e).__name__}: {e}"
    return None


def layer_label(alpha: float | None) -> str:
    if alpha is None or alpha != alpha:  # NaN: no fit
        return "none"
    if alpha > UNDER_TRAINED_ALPHA:
        return "under-trained"
    if alpha < OVER_TRAINED_ALPHA:
        return "over-trained"
    return "ok"


def run_labels(alphas: list[float | None]) -> dict[str, Any]:
    """The run's labels from its layers' alphas, by the `any` and the `majority` rule."""
    labels = [layer_label(a) for a in alphas]
    fitted = [x for x in labels if x != "none"]
    counts = {k: fitted.count(k) for k in ("under-trained", "over-trained", "ok")}
    flagged_any = sorted(k for k in ("under-trained", "over-trained") if counts[k])
    majority = [k for k in ("under-trained", "over-trained") if fitted and counts[k] * 2 >= len(fitted)]
    return {"n_layers": len(fitted), "counts": counts, "any": flagged_any, "majority": majority}


def analyze_run(run_dir: Path, model_factory: str | None = None) -> dict[str, Any]:
    """WeightWatcher's per-layer alphas of the run's final model, and the run's labels."""
    import weightwatcher as ww

    from degrade.run import RunOptions, open_run
    run = open_run(run_dir, RunOptions(model_factory=model_factory))
    module = run.model().module
    with quiet():
        details = ww.WeightWatcher(model=module).analyze()
    # No analysable layer (all matrices under its size floor): an empty frame without columns.
    column = details["alpha"].tolist() if "alpha" in getattr(details, "columns", ()) else []
    alphas = [None if a != a else float(a) for a in column]
    return {"alphas": [round(a, 3) if a is not None else None for a in alphas], **run_labels(alphas)}


def side_by_side(cases: Iterable[Case], built_for: Callable[[Case], Any]) -> dict[str, Any]:
    """Run WeightWatcher on each case's final model (built_for(case) -> Built) and summarise:
    reachability faults caught by an under/over-trained label, healthy runs flagged."""
    reason = unavailable()
    if reason:
        return {"skipped": reason}
    rows = []
    for case in cases:
        row: dict[str, Any] = {"name": case.name, "expected_layer": case.layer}
        try:
            built = built_for(case)
            row.update(analyze_run(built.run_dir, built.model_factory))
        except Exception as e:  # noqa: BLE001 - one model WeightWatcher cannot read is one row
            row["error"] = f"{type(e).__name__}: {e}"
        rows.append(row)
    return {"cases": rows, **summarise(rows)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rule in ("any", "majority"):
        reach = [r for r in rows if r["expected_layer"] == "reachability" and "error" not in r]
        healthy = [r for r in rows if r["expected_layer"] == "none" and "error" not in r]
        faulty = [r for r in rows if r["expected_layer"] not in ("none", "reachability") and "error" not in r]
        out[rule] = {
            "reachability_caught": sum(bool(r[rule]) for r in reach), "reachability_n": len(reach),
            "healthy_flagged": sum(bool(r[rule]) for r in healthy), "healthy_n": len(healthy),
            "other_faults_flagged": sum(bool(r[rule]) for r in faulty), "other_faults_n": len(faulty),
        }
    out["errors"] = sum("error" in r for r in rows)
    return out
