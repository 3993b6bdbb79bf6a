"""Reading the store across runs: seed 003's table (one row per run, its params as columns, the
metric with its error bar, the verdict) and its reproducibility test (two runs of one generator,
params and data must agree within their error bars)."""
from __future__ import annotations

import math
from typing import Any

REPRO_Z = 3.0  # standard errors of the difference beyond which two identical runs disagree (3-sigma)


def latest_per_run(rows: list[dict]) -> list[dict]:
    """The newest stored diagnosis of each run (rows come newest first); a failed one, which has no
    fingerprint, by its path."""
    seen, out = set(), []
    for r in rows:
        key = r["run_fingerprint"] or r["run_path"]
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def varying_params(rows: list[dict]) -> list[str]:
    """The params whose values differ between the runs: the table's default columns."""
    keys = sorted({k for r in rows for k in r["params"]})
    return [k for k in keys if len({repr(r["params"].get(k)) for r in rows}) > 1]


def metric_of(row: dict, name: str) -> tuple[float | None, float | None]:
    m = row["metrics"].get(name)
    if isinstance(m, dict):
        return m.get("value"), m.get("se")
    return (m, None) if isinstance(m, (int, float)) else (None, None)


def table(rows: list[dict], by: list[str] | None, metric: str) -> dict[str, Any]:
    runs = latest_per_run(rows)
    cols = by or varying_params(runs)
    out = []
    for r in runs:
        value, se = metric_of(r, metric)
        out.append({"id": r["id"], "run": r["run_path"], **{c: r["params"].get(c) for c in cols},
                    metric: value, "se": se, "verdict": r["verdict_layer"],
                    "dirty": bool(r["generator"].get("git_dirty"))})
    return {"columns": ["id", "run", *cols, metric, "se", "verdict", "dirty"], "rows": out}


def render(t: dict) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "*" if v is True else "" if v in (None, False) else str(v)
    rows = [[cell(r[c]) for c in t["columns"]] for r in t["rows"]]
    widths = [max(len(c), *(len(x[i]) for x in rows)) if rows else len(c) for i, c in enumerate(t["columns"])]
    lines = ["  ".join(c.ljust(w) for c, w in zip(t["columns"], widths))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in rows]
    return "\n".join(lines) + ("\n* trained from a dirty checkout: its generator is not a commit" if any(
        r["dirty"] for r in t["rows"]) else "")


def repro(a: dict, b: dict) -> dict[str, Any]:
    """Do two stored runs share generator, params and data, and do their metrics agree?"""
    same = {part: a[part] == b[part] for part in ("generator", "params", "data")}
    metrics = {}
    for name in sorted(set(a["metrics"]) & set(b["metrics"])):
        (va, sa), (vb, sb) = metric_of(a, name), metric_of(b, name)
        if va is None or vb is None or not sa or not sb:
            continue
        z = abs(va - vb) / math.sqrt(sa ** 2 + sb ** 2)
        metrics[name] = {"a": va, "b": vb, "se_a": sa, "se_b": sb, "z": round(z, 2), "agree": z <= REPRO_Z}
    comparable = all(same.values())
    return {"same": same, "comparable": comparable, "metrics": metrics,
            "dirty": [r["id"] for r in (a, b) if r["generator"].get("git_dirty")],
            "reproduced": comparable and bool(metrics) and all(m["agree"] for m in metrics.values())}


def same_experiment(a: dict, b: dict) -> bool:
    """Whether something known ties two runs into one sweep: the same code commit, the same eval
    data, or the same model family and vocabulary. Without it, runs of unrelated projects that log
    few params would pass for a grid: every param both lack is "equal" (seen on the public
    trainer_state.json logs of shared/real-runs, which share nothing)."""
    commit = a["generator"].get("git_commit")
    if commit and commit == b["generator"].get("git_commit"):
        return True
    if any(k.startswith("eval.") and v == b["data"].get(k) for k, v in a["data"].items()):
        return True
    keys = ("model.model_type", "model.vocab_size")
    return all(a["params"].get(k) is not None and a["params"].get(k) == b["params"].get(k) for k in keys)


def sweep(rows: list[dict], metric: str, size_param: str = "data.train_rows") -> dict[str, Any]:
    """Which parameter moves the metric or the verdict: for each varying param, every pair of runs
    of one experiment that differ in that param alone (all other params equal, as in a grid sweep), the metric's
    difference in standard errors (beyond REPRO_Z: beyond noise) and whether the verdict changed."""
    runs = [r for r in latest_per_run(rows) if r.get("status", "done") == "done"]
    params = varying_params(runs)
    out: dict[str, Any] = {}
    for p in params:
        others = [q for q in params if q != p]
        pairs = []
        for i, a in enumerate(runs):
            for b in runs[i + 1:]:
                if a["params"].get(p) == b["params"].get(p) or not same_experiment(a, b) or any(
                        a["params"].get(q) != b["params"].get(q) for q in others):
                    continue
                (va, sa), (vb, sb) = metric_of(a, metric), metric_of(b, metric)
                z = (abs(va - vb) / math.sqrt(sa ** 2 + sb ** 2)) if None not in (va, vb) and sa and sb else None
                pairs.append({"a": a["id"], "b": b["id"], "values": [a["params"].get(p), b["params"].get(p)],
                              metric: [va, vb], "z": None if z is None else round(z, 2),
                              "verdicts": [a["verdict_layer"], b["verdict_layer"]]})
        zs = [x["z"] for x in pairs if x["z"] is not None]
        out[p] = {"pairs": len(pairs), "max_z": max(zs) if zs else None,
                  "moves_metric": bool(zs) and max(zs) > REPRO_Z,
                  "moves_verdict": any(x["verdicts"][0] != x["verdicts"][1] for x in pairs), "detail": pairs}
    return {"metric": metric, "runs": len(runs), "params": out,
            "data_curves": data_curves(runs, metric, size_param) if size_param in params else []}


def data_curves(runs: list[dict], metric: str, size_param: str) -> list[dict[str, Any]]:
    """The learning curve over `size_param` (learning_curve.py's fit y = E + B D^-beta and its
    reading) for each group of runs of one experiment equal in every other param: would more data still pay, at each
    learning rate of the sweep? y is each run's best logged value (the early-stopped model, as
    `degrade learning-curve` reads it), else its stored value."""
    from degrade.learning_curve import DataCurve, Point, read_curve
    from degrade.metric_direction import higher_is_better
    others = [q for q in varying_params(runs) if q != size_param]
    groups: dict[tuple, list[Point]] = {}
    tied = [r for r in runs if any(same_experiment(r, o) for o in runs if o is not r)]
    for r in tied:
        m, size = r["metrics"].get(metric), r["params"].get(size_param)
        value, step = (m.get("best", m.get("value")), m.get("best_step")) if isinstance(m, dict) else (m, None)
        if isinstance(size, (int, float)) and isinstance(value, (int, float)):
            key = tuple((q, r["params"].get(q)) for q in others)
            groups.setdefault(key, []).append(Point(r["run_path"], float(size), size_param, float(value), step))
    out = []
    for key, points in groups.items():
        if len({p.size for p in points}) >= 2:
            curve = DataCurve(metric, metric != "loss" and higher_is_better(metric), sorted(points, key=lambda p: p.size))
            read_curve(curve)
            out.append({"fixed": dict(key), **curve.to_dict()})
    return out
