"""O102's clusters: the eval data's sampling units and how they widen the error bars."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from degrade.checks.observation._stats import (cluster_sums, full_design_effect, kish_cluster_size,
                                               num, to_full)


@dataclass
class Clusters:
    """The eval data's sampling units (its group/source/doc_id column) and how they turn the
    per-example SEs of a scored sample into the clustered SE of the full eval set."""
    groups: np.ndarray  # one label per example of the full eval data
    min_clusters: int

    @cached_property
    def n_clusters(self) -> int:
        return int(np.unique(self.groups).size)

    def summary(self) -> dict[str, Any]:
        out = {"n_clusters": self.n_clusters, "examples_per_cluster": num(self.groups.size / self.n_clusters, 3),
               "kish_cluster_size": num(kish_cluster_size(self.groups), 3)}
        if self.n_clusters < self.min_clusters:
            out["few_clusters"] = (f"only {self.n_clusters} clusters (< {self.min_clusters}): a "
                                   "cluster-robust SE is biased down and noisy with few clusters "
                                   "(Cameron & Miller 2015); treat the error bars as lower bounds")
        return out

    def closed_form(self, fn, cols: tuple, indices: np.ndarray, n_full: int) -> tuple[float, float, dict | None]:
        """(estimate, SE for the full set, cluster evidence) of fn(*cols) (ratio_se or
        paired_ratio_se over per-example columns; the last column is the counts)."""
        est, naive = fn(*cols)
        _, clustered = fn(*cluster_sums(self.groups[indices], *cols))
        se, ev = self.combine(to_full(naive, len(indices), n_full), to_full(clustered, len(indices), n_full),
                              indices, n_full)
        return est, se, ev

    def combine(self, naive: float, clustered: float, indices: np.ndarray, n_full: int) -> tuple[float, dict]:
        """The clustered SE of the full set from the per-example (naive) and clustered SEs of the
        scored examples, both already scaled to the full set. A uniform sample of the examples
        breaks clusters up, so its design effect is extrapolated to the full set's cluster size."""
        deff_scored = (clustered / naive) ** 2 if naive > 0 and math.isfinite(clustered) else float("nan")
        ev: dict[str, Any] = {"n_clusters": self.n_clusters}
        if len(indices) < n_full:
            scored = self.groups[indices]
            deff = full_design_effect(deff_scored, kish_cluster_size(scored), kish_cluster_size(self.groups))
            ev["n_clusters_scored"] = int(np.unique(scored).size)
            ev["design_effect_of_scored_sample"] = num(deff_scored, 3)
            if deff is None:
                ev["note"] = ("the scored sample holds no two examples of one cluster: the design "
                              "effect cannot be estimated, so the SE assumes independent examples "
                              "(optimistic); score more examples (--budget)")
            else:
                ev["design_effect_how"] = ("extrapolated from the scored sample: 1 + (m - 1) * rho "
                                           "(Kish), rho from the sample, m the full set's cluster size")
        else:
            deff = deff_scored if math.isfinite(deff_scored) else None
        se = naive * math.sqrt(deff) if deff is not None else (clustered if math.isfinite(clustered) else naive)
        ev["design_effect"] = num(deff, 3)
        ev["se_naive"] = num(naive, 3)
        ev["se_clustered"] = num(se, 3)
        if self.n_clusters < self.min_clusters:
            ev["few_clusters"] = True
        return se, ev

    def how(self, ev: dict) -> str:
        deff = ev.get("design_effect")
        return (f"; SE clustered on `group` (the eval data's group/source/doc_id column: "
                f"{ev['n_clusters']} clusters, design effect {deff if deff is not None else 'unknown'}, "
                f"naive SE {ev['se_naive']})"
                + ("; few clusters: the clustered SE is unreliable (biased down)" if ev.get("few_clusters") else ""))
