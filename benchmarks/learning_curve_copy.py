"""`degrade learning-curve` on real training runs: the copy task at growing training-set sizes.

Trains TinyGPT (the DegradeBench model, recorded with degrade.Recorder, so each run's manifest
carries its training-set size) on 32...512 copy-task rows for a fixed number of steps, evaluates
on 256 unseen rows, and runs `degrade learning-curve` over the runs. Two model sizes: the bench's
default TinyGPT, and one with d_model=8 (its capacity, not the data, should limit it).

    python benchmarks/learning_curve_copy.py --sizes 32,64,128,256,512 --steps 400
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from degrade.bench.families import copy_data, plain_run  # noqa: E402
from degrade.learning_curve import learning_curve  # noqa: E402

MODELS = {"default": {"vocab": 17, "max_len": 32}, "d_model=8": {"vocab": 17, "max_len": 32, "d_model": 8}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="32,64,128,256,512")
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in MODELS.items():
            t = time.perf_counter()
            runs = []
            for n in sizes:
                train, evals = copy_data(n, 256, seed=1)
                folder = Path(tmp) / name.replace("=", "") / f"n{n}"
                runs.append(plain_run(folder, cfg, train, evals, max_steps=args.steps,
                                      eval_steps=args.steps // 8).run_dir)
            c = learning_curve(runs)
            print(json.dumps({"model": name, "train_s": round(time.perf_counter() - t, 1),
                              "points": [(p.size, round(p.value, 4)) for p in c.points],
                              "reading": c.reading, "fit": c.fit}), flush=True)


if __name__ == "__main__":
    main()
