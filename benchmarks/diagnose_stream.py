"""`degrade diagnose` on training files of growing size: wall time and peak memory end to end.

Writes a run dir (a trainer_state.json), an eval set of --eval rows and training files of each
--sizes rows as JSON lines (lengths 16-48, a 32,000-token vocabulary, Zipf-like frequencies; the
eval set holds --copies exact copies of training rows spread over the whole file, so a check that
only read the first rows would miss most of them). Then runs, in a fresh process per size,

    degrade diagnose RUN --train-data T --eval-data E --budget thorough --format json

and prints one JSON line per size: wall seconds, the child's peak RSS (getrusage), the checks that
ran, and what O103 and R209 found (so a fast but blind run cannot pass).

    python benchmarks/diagnose_stream.py --sizes 100000,300000,1000000 --eval 10000
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _child import measure as measure_child  # noqa: E402

VOCAB = 32_000


def rows(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for start in range(0, n, 50_000):
        k = min(50_000, n - start)
        lengths = rng.integers(16, 49, size=k)
        flat = (rng.zipf(1.3, size=int(lengths.sum())) % VOCAB).tolist()
        at = 0
        for length in lengths.tolist():
            yield flat[at:at + length]
            at += length


def write_data(folder: Path, n_train: int, n_eval: int, copies: int, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed + 1)
    copied = set(rng.choice(n_train, size=copies, replace=False).tolist())
    kept = []
    train = folder / f"train_{n_train}.jsonl"
    with open(train, "w") as f:
        for i, ids in enumerate(rows(n_train, seed)):
            f.write(json.dumps({"input_ids": ids}, separators=(",", ":")) + "\n")
            if i in copied:
                kept.append(ids)
    evals = folder / f"eval_{n_train}.jsonl"
    fresh = rows(n_eval - len(kept), seed + 7)
    with open(evals, "w") as f:
        for ids in kept + list(fresh):
            f.write(json.dumps({"input_ids": ids}, separators=(",", ":")) + "\n")
    return train, evals


def measure(run_dir: Path, train: Path, evals: Path) -> dict:
    out = measure_child([sys.executable, "-m", "degrade", "diagnose", str(run_dir), "--train-data",
                         str(train), "--eval-data", str(evals), "--budget", "thorough", "--format", "json"])
    if out["rc"] not in (0, 1, 3):
        raise SystemExit(f"degrade diagnose failed ({out['rc']}): {out['stderr']}")
    d = json.loads(out["stdout"])
    found = {f["code"]: f["evidence"] for f in d["findings"]}
    o103, r209 = found.get("O103", {}), found.get("R209", {})
    return {"wall_s": round(out["wall_s"], 1), "peak_rss_mb": round(out["peak_rss_mb"]),
            "ran": sorted(c["code"] for c in d["checks"] if c["status"] == "ran"),
            "o103_exact": o103.get("exact_input"), "o103_near_searched": o103.get("n_train_near"),
            "o103_n_train": o103.get("n_train"), "r209_n_train": r209.get("n_train_examples"),
            "o105_drift": (found.get("O105", {}).get("domain_classifier") or {}).get("drift_score")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,300000,1000000")
    ap.add_argument("--eval", type=int, default=10_000)
    ap.add_argument("--copies", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run_dir = folder / "run"
        run_dir.mkdir()
        (run_dir / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 10.0}]}))
        for n in (int(s) for s in args.sizes.split(",")):
            t = time.perf_counter()
            train, evals = write_data(folder, n, args.eval, args.copies, args.seed)
            result = {"n_train": n, "n_eval": args.eval, "planted_copies": args.copies,
                      "train_file_mb": round(train.stat().st_size / 2**20),
                      "write_s": round(time.perf_counter() - t, 1), **measure(run_dir, train, evals)}
            print(json.dumps(result), flush=True)
            train.unlink()


if __name__ == "__main__":
    main()
