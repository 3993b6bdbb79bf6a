"""Attribution patching against exact ablation, on every component of the bench's models
(docs/benchmarks.md, "Attribution vs exact ablation").

    python benchmarks/attribution_agreement.py [--cache .bench-cache] [--rows 16] [--mode zero]

For each built DegradeBench case with a model and eval data (run `degrade bench` first), on the
same `--rows` eval rows: every head and MLP is ablated exactly (one forward each) and estimated
by attribution patching (one forward + backward for all, degrade/probing/attribution.py), and the
Spearman rank correlation of the two is reported, over all components and over those whose exact
effect is at least 1% of the largest (the ones a ranking is for), with the cost of the ranking
in eval passes (a grad-enabled forward counts 3).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def agreement(run_dir: Path, eval_data: Path, rows: int, mode: str, factory: str | None) -> dict:
    from scipy.stats import spearmanr

    from degrade.engine.captures import ComponentCapture
    from degrade.engine.passes import run_pass
    from degrade.probing.ablation_probe import AblationProbe
    from degrade.probing.attribution import attribute
    from degrade.run import RunOptions, open_run
    run = open_run(run_dir, RunOptions(eval_data=str(eval_data), model_factory=factory))
    model, data = run.model(), run.eval_data
    idx = np.arange(min(rows, len(data)))
    cap = ComponentCapture(model.module)
    seen = run_pass(model, data, idx, captures=[cap])
    comps, stats = seen.captures["components"]
    candidates = [c for c in comps.all if stats.called(c)]
    if len(candidates) < 3:
        return {"skipped": f"{len(candidates)} component(s): nothing to rank"}
    means = stats.means() if mode == "mean" else None
    attr = attribute(model, data, idx, candidates, means=means)
    probe = AblationProbe(model, data, idx)
    exact = np.asarray([probe.ablated([c], mode, means)[1][0] for c in candidates])
    est = np.asarray([attr.delta(c)[0] for c in candidates])
    big = np.abs(exact) >= 0.01 * np.abs(exact).max()
    rho = spearmanr(est, exact).statistic
    rho_big = spearmanr(est[big], exact[big]).statistic if big.sum() >= 3 else float("nan")
    tokens = int(sum(len(data.input_ids[int(i)]) for i in idx))
    return {"components": len(candidates), "spearman": round(float(rho), 3),
            "spearman_material": round(float(rho_big), 3), "material": int(big.sum()),
            "base_loss": round(float(probe.base_loss.mean()), 3),
            "ranking_cost_tokens": 3 * tokens, "exact_cost_tokens": tokens * (len(candidates) + 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default=".bench-cache")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--mode", default="zero", choices=("zero", "mean"))
    ap.add_argument("--cases", default="*", help="glob over the cache's case names")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    out = {}
    for built in sorted(Path(a.cache).glob(f"{a.cases}/built.json")):
        b = json.loads(built.read_text())
        if not b.get("eval_data"):
            continue
        run_dir = Path(b["run_dir"])
        try:
            out[built.parent.name] = agreement(run_dir, Path(b["eval_data"]), a.rows, a.mode, b.get("model_factory"))
        except Exception as e:  # a case without a loadable model says so and the rest go on
            out[built.parent.name] = {"error": f"{type(e).__name__}: {str(e)[:160]}"}
        print(built.parent.name, json.dumps(out[built.parent.name]), flush=True)
    rhos = [v["spearman"] for v in out.values() if np.isfinite(v.get("spearman", np.nan))]
    print(json.dumps({"cases": len(rhos), "median_spearman": round(float(np.median(rhos)), 3) if rhos else None,
                      "min_spearman": min(rhos) if rhos else None,
                      "at_least_0.9": sum(r >= 0.9 for r in rhos)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
