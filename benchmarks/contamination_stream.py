"""Streaming contamination and shift: N training sequences against M eval sequences.

Generates synthetic token data (lengths 16-48, a 32,000-token vocabulary, Zipf-like token
frequencies) batch by batch, so the training set never exists in memory at once. The eval set
holds `--copies` exact copies of training rows, as many near-duplicates (one token changed) and
fresh rows. Streams the training set once through degrade.probing.stream_overlap (exact, n-gram,
MinHash/LSH) and degrade.probing.shift.TrainProfile (targets, lengths, reservoir sample), then runs
the domain-classifier shift test. Prints JSON: wall time, peak RSS (resource.getrusage) and what
was found (so a fast but blind run cannot pass).

    python benchmarks/contamination_stream.py --train 1000000 --eval 10000
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from degrade.probing.shift import DIRECT_TOKENS, FeatureSpec, TrainProfile, domain_test, features  # noqa: E402
from degrade.probing.stream_overlap import StreamingOverlap  # noqa: E402

VOCAB = 32_000


def train_batch(b: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training batch b, regenerated identically from (seed, b)."""
    rng = np.random.default_rng([seed, b])
    lengths = rng.integers(16, 49, size=size)
    offsets = np.r_[0, np.cumsum(lengths)]
    flat = (rng.zipf(1.3, size=int(offsets[-1])) % VOCAB).astype(np.int64)
    return flat, offsets


def eval_set(n_eval: int, copies: int, batch: int, seed: int) -> tuple[list[np.ndarray], dict]:
    flat, offsets = train_batch(0, batch, seed)  # copies come from the first training batch
    rng = np.random.default_rng(seed + 1)
    rows = rng.choice(batch, size=2 * copies, replace=False)
    seqs = [flat[offsets[r]:offsets[r + 1]].copy() for r in rows]
    for s in seqs[copies:]:  # near-duplicates: one token changed
        s[rng.integers(len(s))] = rng.integers(VOCAB)
    fresh_rng = np.random.default_rng(seed + 2)
    while len(seqs) < n_eval:
        n = int(fresh_rng.integers(16, 49))
        seqs.append((fresh_rng.zipf(1.3, size=n) % VOCAB).astype(np.int64))
    return seqs, {"exact_copies": copies, "near_duplicates": copies}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=1_000_000)
    ap.add_argument("--eval", type=int, default=10_000)
    ap.add_argument("--copies", type=int, default=200)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--reservoir", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    start = time.perf_counter()
    ev, planted = eval_set(args.eval, args.copies, args.batch, args.seed)
    overlap = StreamingOverlap(ev)
    profile = TrainProfile(args.reservoir, args.seed)
    t_index = time.perf_counter() - start
    for b in range(0, (args.train + args.batch - 1) // args.batch):
        size = min(args.batch, args.train - b * args.batch)
        flat, offsets = train_batch(b, size, args.seed)
        overlap.add(flat, offsets)
        profile.update_flat(flat, offsets)
    t_stream = time.perf_counter() - start - t_index
    frac = overlap.ngram_fraction()
    exact = overlap.exact_train_row >= 0
    near = overlap.best_jaccard >= 0.8
    ngram_major = frac >= 0.5
    # shift: eval rows against the reservoir sample of training rows
    tr_ids, _, _ = profile.sample()
    ev_ids = [s.tolist() for s in ev]
    spec = FeatureSpec(vocab_direct=max(profile.max_token, VOCAB - 1) < DIRECT_TOKENS, n_labels=None)
    shift = domain_test(features(tr_ids, None, None, spec), features(ev_ids, None, None, spec),
                        spec.names(), args.seed)
    total = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mb = usage.ru_maxrss / 1024  # Linux: KiB
    cpu_s = usage.ru_utime + usage.ru_stime  # what the run costs on an idle core
    print(json.dumps({
        "n_train": overlap.n_train, "n_eval": len(ev), "batch": args.batch,
        "wall_s": round(total, 1), "index_s": round(t_index, 1), "stream_s": round(t_stream, 1),
        "cpu_s": round(cpu_s, 1), "budget_s": 120, "ratio_to_budget": round(total / 120, 3), "peak_rss_mb": round(peak_mb, 1),
        "planted": planted, "found": {"exact": int(exact.sum()), "minhash_j_ge_0.8": int(near.sum()),
                                      "ngram_majority": int(ngram_major.sum()),
                                      "contaminated_any": int((exact | near | ngram_major).sum()),
                                      "lsh_candidates_verified": overlap.candidates_verified},
        "shift": {"auc": shift["auc"], "drift_score": shift["drift_score"], "p_value": shift["p_value"],
                  "reservoir": len(tr_ids), "train_targets_seen": len(profile.targets)},
    }, indent=1))


if __name__ == "__main__":
    main()
