"""Statistics shared by the observation checks (O101, O102, O103). Plain numpy, deterministic.

- Standard errors of the means an evaluation reports. Two shapes occur:
  * a mean over examples (classification accuracy, an example-averaged loss): SE = s / sqrt(n);
  * a ratio pooled over tokens (token accuracy, a token-averaged LM loss): sum(y_i) / sum(t_i)
    with y_i, t_i the per-example sums. Tokens of one example are not independent draws, so the
    SE is clustered on the example (Miller 2024, "Adding Error Bars to Evals", §2.2): the
    linearised (delta-method) ratio SE, sqrt(n/(n-1) * sum((y_i - R t_i)^2)) / sum(t_i).
- Clusters: when examples share a sampling unit (several questions about one document), the
  examples are not independent draws either. `cluster_sums` aggregates per-example sums and counts
  per cluster; passing them to `ratio_se` / `paired_ratio_se` gives the cluster-robust
  (Liang-Zeger sandwich) SE, with the G/(G-1) small-sample factor (Miller 2024 §2.2: cluster on
  the sampled unit). With one example per cluster it is the per-example SE exactly.
  `cluster_bootstrap_se` resamples whole clusters. A random sample of the examples breaks the
  clusters up, so its design effect is smaller than the full set's: `full_design_effect`
  extrapolates it with Kish's deff = 1 + (m - 1) * rho.
- Scaling an SE measured on a sample of n to the full set of N (`to_full`) and the finite-
  population correction for comparing a sample's mean with the full set's (`fpc`).
- Wilson intervals for proportions (better than the normal interval at small n or extreme p).
- z-tests and the minimum detectable effect (MDE) at alpha=0.05, power 0.8:
  MDE = (z_0.975 + z_0.8) * SE_diff = 2.80 * SE_diff, with SE_diff = sqrt(2) * SE for two
  unpaired evaluations of the same size (Miller 2024, §4 power analysis).
- The eval-set size a Hugging Face history implies: eval_runtime * eval_samples_per_second
  (both logged on every eval record), cross-checked against the denominators of logged
  accuracies (k/n fractions).
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable

import numpy as np

from degrade.stats import num  # noqa: F401 - re-exported: checks call C.num / _stats.num

Z95 = 1.959963984540054  # two-sided alpha = 0.05
Z_POWER80 = 0.8416212335729143  # one-sided beta = 0.2
MDE_FACTOR = Z95 + Z_POWER80  # 2.80

# Metrics that are proportions in [0, 1] (a binomial SE applies); f1/precision/recall are not
# means of per-example 0/1 scores, so for them sqrt(p(1-p)/n) is only an approximation.
_PROPORTION_RE = re.compile(r"(^|_)(acc|accuracy|exact_match|em|top\d+_accuracy|match)(_|$)|accuracy")
_APPROX_PROPORTION_RE = re.compile(r"(^|_)(f1|precision|recall)(_|$)")
_LOSS_RE = re.compile(r"(^|_)(loss|perplexity|ppl|cer|wer)(_|$)")


def metric_kind(name: str) -> str | None:
    """'proportion', 'approx-proportion' (f1/precision/recall), 'loss' or None (no SE rule)."""
    n = name.lower()
    if n == "loss" or _LOSS_RE.search(n):
        return "loss"
    if _PROPORTION_RE.search(n):
        return "proportion"
    if _APPROX_PROPORTION_RE.search(n):
        return "approx-proportion"
    return None


def lower_is_better(name: str) -> bool:
    return metric_kind(name) == "loss"


# ---- standard errors ----------------------------------------------------------------------
def mean_se(x: np.ndarray) -> tuple[float, float]:
    """(mean, SE) of per-example values: s / sqrt(n), ddof=1."""
    x = np.asarray(x, dtype=float)
    n = x.size
    if n == 0:
        return float("nan"), float("nan")
    if n == 1:
        return float(x[0]), float("nan")
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(n))


def ratio_se(sums: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """(sum(sums)/sum(counts), clustered SE): a token-pooled mean, clustered on examples."""
    sums, counts = np.asarray(sums, float), np.asarray(counts, float)
    n, total = sums.size, float(counts.sum())
    if n < 2 or total <= 0:
        return (float(sums.sum() / total) if total > 0 else float("nan")), float("nan")
    r = float(sums.sum() / total)
    resid = sums - r * counts
    return r, float(math.sqrt(n / (n - 1) * float((resid ** 2).sum())) / total)


def paired_ratio_se(sums_a: np.ndarray, sums_b: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """(R_a - R_b, clustered SE of the difference) for two token-pooled means on the same examples."""
    sums_a, sums_b, counts = (np.asarray(v, float) for v in (sums_a, sums_b, counts))
    n, total = counts.size, float(counts.sum())
    if n < 2 or total <= 0:
        return float("nan"), float("nan")
    ra, rb = sums_a.sum() / total, sums_b.sum() / total
    resid = (sums_a - ra * counts) - (sums_b - rb * counts)
    return float(ra - rb), float(math.sqrt(n / (n - 1) * float((resid ** 2).sum())) / total)


def binomial_se(p: float, n: float) -> float:
    if n is None or n <= 0 or not (0.0 <= p <= 1.0):
        return float("nan")
    return math.sqrt(p * (1.0 - p) / n)


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion p observed on n items."""
    if n is None or n <= 0:
        return float("nan"), float("nan")
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def to_full(se_sample: float, n_sample: int, n_full: int) -> float:
    """The SE a mean over the full set of n_full has, from an SE measured on n_sample of them."""
    if n_full <= 0 or n_sample <= 0:
        return float("nan")
    return se_sample * math.sqrt(n_sample / n_full)


def fpc(n_sample: int, n_full: int) -> float:
    """Finite-population correction: the SE of (sample mean - full-set mean) is SE * fpc."""
    if n_full <= 0:
        return 1.0
    return math.sqrt(max(0.0, 1.0 - n_sample / n_full))


def z_test(diff: float, se: float) -> tuple[float, float]:
    """(z, two-sided p) for a difference with standard error se."""
    if not (se and math.isfinite(se) and se > 0):
        return float("nan"), float("nan")
    z = diff / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def mde(se_diff: float) -> float:
    """Minimum detectable effect at alpha=0.05 (two-sided), power 0.8."""
    return MDE_FACTOR * se_diff


def bootstrap_se(stat: Callable[[np.ndarray], float], n: int, resamples: int, seed: int) -> tuple[float, float, float]:
    """(SE, 2.5% and 97.5% quantiles) of stat(idx) over `resamples` bootstrap index draws."""
    rng = np.random.default_rng(seed)
    return _bootstrap(stat, lambda: rng.integers(0, n, size=n), resamples)


def cluster_bootstrap_se(stat: Callable[[np.ndarray], float], groups: Any, resamples: int,
                         seed: int) -> tuple[float, float, float]:
    """bootstrap_se resampling whole clusters: each draw picks as many clusters as there are,
    with replacement, and passes stat the indices of all their members (so draws vary in size)."""
    _, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    inv = inv.ravel()
    order = np.argsort(inv, kind="stable")  # members of cluster 0, then of cluster 1, ...
    sizes = np.bincount(inv)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rng = np.random.default_rng(seed)

    def draw() -> np.ndarray:
        c = rng.integers(0, sizes.size, size=sizes.size)
        lens = sizes[c]
        within = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        return order[np.repeat(starts[c], lens) + within]
    return _bootstrap(stat, draw, resamples)


def _bootstrap(stat: Callable[[np.ndarray], float], draw: Callable[[], np.ndarray],
               resamples: int) -> tuple[float, float, float]:
    vals = np.array([stat(draw()) for _ in range(resamples)], dtype=float)
    vals = vals[np.isfinite(vals)]
    if vals.size < 2:
        return float("nan"), float("nan"), float("nan")
    return float(vals.std(ddof=1)), float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))


# ---- clusters -------------------------------------------------------------------------------
def cluster_sums(groups: Any, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-cluster sums of each per-example column, one group label per example (clusters in the
    sorted order of their labels). ratio_se(*cluster_sums(g, sums, counts)) is the cluster-robust
    SE of the pooled mean; for a mean over examples pass counts of 1."""
    _, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    return tuple(np.bincount(inv.ravel(), weights=np.asarray(c, float)) for c in columns)


def kish_cluster_size(groups: Any) -> float:
    """sum(m_g^2) / sum(m_g): the cluster size m in Kish's design effect 1 + (m - 1) * rho when
    clusters have unequal sizes m_g (1 when every example is its own cluster)."""
    m = np.unique(np.asarray(groups).astype(str), return_counts=True)[1].astype(float)
    return float((m ** 2).sum() / m.sum()) if m.size else float("nan")


def full_design_effect(deff_sample: float, m_sample: float, m_full: float) -> float | None:
    """The design effect of the full set, from that of a uniform sample of its examples: the
    intra-cluster correlation rho = (deff - 1) / (m - 1) of the sample (clipped to [0, 1]), put
    back into 1 + (m - 1) * rho with the full set's cluster size. None when the sample holds no
    two examples of one cluster (rho is then not estimable)."""
    if not math.isfinite(deff_sample) or m_sample <= 1 + 1e-9:
        return None
    rho = min(1.0, max(0.0, (deff_sample - 1.0) / (m_sample - 1.0)))
    return 1.0 + (m_full - 1.0) * rho


# ---- eval-set size from a history -------------------------------------------------------------
# The exact-k/n refinement scans +-5% around the estimate: bounded so that a corrupt eval_runtime
# (an estimate of 10^12 examples) cannot turn it into a scan of 10^11 candidates.
MAX_FIT_N = 1_000_000
MAX_FIT_VALUES = 64
def eval_size_from_records(records: list[dict], proportion_keys: Iterable[str] = ()) -> tuple[int | None, str]:
    """(n, how) for an eval set from its records: median of runtime * samples_per_second, refined
    to the nearest n that makes every logged proportion a k/n fraction when one fits within 5%.
    Returns (None, reason) when the history does not say."""
    est = [float(r["runtime"]) * float(r["samples_per_second"]) for r in records
           if r.get("runtime") and r.get("samples_per_second")]
    est = [e for e in est if math.isfinite(e) and e > 0]
    if not est:
        return None, "no eval_runtime / eval_samples_per_second in the history"
    n_est = float(np.median(est))
    how = (f"estimated as eval_runtime x eval_samples_per_second (median over {len(est)} eval "
           f"record(s): {n_est:.1f})")
    values = sorted({float(r[k]) for r in records for k in proportion_keys
                     if isinstance(r.get(k), (int, float)) and 0.0 <= float(r[k]) <= 1.0})[:MAX_FIT_VALUES]
    if values and 1 <= n_est <= MAX_FIT_N:
        lo, hi = max(1, int(math.floor(n_est * 0.95))), int(math.ceil(n_est * 1.05)) + 1
        m = np.arange(lo, hi, dtype=float)
        v = np.asarray(values)[:, None] * m
        ok = (np.abs(v - np.round(v)) < 1e-6 * np.maximum(m, 1)).all(axis=0)
        fits = m[ok].astype(int).tolist()
        # An n that fits only because every value is 0, 1/2, ... tells nothing: require that the
        # fit is specific (fewer than 1 in 4 candidates fit).
        if fits and len(fits) <= max(1, (hi - lo) // 4):
            best = min(fits, key=lambda c: abs(c - n_est))
            return best, how + f"; {best} makes every logged {', '.join(sorted(set(proportion_keys)))} an exact k/n"
    return max(1, int(round(n_est))), how
