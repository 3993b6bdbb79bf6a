"""Peak memory of a diagnosis on a large vocabulary and long sequences (docs/benchmarks.md).

    python benchmarks/diagnose_memory.py [--vocab 50257 --rows 64 --length 1024 --width 64]
                                         [--budget standard] [--per-check]

Builds a 1-layer GPT-2 with a 50,257-token vocabulary, eval data of 64 x 1024 tokens and a
training file of the same shape, then runs `degrade diagnose` in a fresh process under
`ulimit -v` (address space capped at 2 x checkpoint + 1 GB plus the address space torch reserves
without touching it, measured by importing torch and transformers under the same shell), and
reports the exit code, failed checks and peak RSS against the bound 2 x checkpoint + 1 GB.
One float32 logits row here is 1024 x 50,257 x 4 B = 206 MB; a batch of 64 rows would be 13 GB.
`--per-check` also runs every check alone to show which one sets the peak.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks")]
from _child import measure  # noqa: E402

MB = 2 ** 20


def build(root: Path, a) -> tuple[Path, Path, Path]:
    import numpy as np
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    run = root / "run"
    cfg = GPT2Config(n_layer=1, n_head=4, n_embd=a.width, vocab_size=a.vocab, n_positions=a.length,
                     bos_token_id=0, eos_token_id=0)
    for step in (100, 200):
        torch.manual_seed(step)
        GPT2LMHeadModel(cfg).save_pretrained(run / f"checkpoint-{step}")
    log = [{"loss": 4.0 * math.exp(-s / 80) + 9.0, "learning_rate": 1e-4, "grad_norm": 1.0,
            "epoch": s / 200, "step": s} for s in range(10, 210, 10)]
    log += [{"eval_loss": 10.9, "epoch": s / 200, "step": s} for s in (100, 200)]
    log.sort(key=lambda r: r["step"])
    (run / "trainer_state.json").write_text(json.dumps({"log_history": log, "global_step": 200, "max_steps": 200}))
    rng = np.random.default_rng(0)
    paths = []
    for name in ("eval", "train"):
        path = root / f"{name}.jsonl"
        with open(path, "w") as f:
            for _ in range(a.rows):
                f.write(json.dumps({"input_ids": rng.integers(0, a.vocab, a.length).tolist()}) + "\n")
        paths.append(path)
    return run, paths[0], paths[1]


def reserved_address_space() -> int:
    """Virtual memory of a process that has only imported torch and transformers: address space
    reserved, not used, which `ulimit -v` would otherwise count against the bound."""
    code = ("import torch, transformers, resource\n"
            "print(open('/proc/self/statm').read().split()[0])")
    pages = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    import os
    return pages * os.sysconf("SC_PAGE_SIZE")


def diagnose(run: Path, ev: Path, tr: Path, budget: str, vmem_kb: int | None, select: str | None = None) -> dict:
    cmd = (f"ulimit -v {vmem_kb} && " if vmem_kb else "") + f"exec {sys.executable} -m degrade diagnose {run} --eval-data {ev} " \
          f"--train-data {tr} --budget {budget} --format json" + (f" --select {select}" if select else "")
    out = measure(["bash", "-c", cmd])
    checks = json.loads(out["stdout"])["checks"] if out["rc"] in (0, 1, 3) else []
    return {"exit": out["rc"], "peak_rss_mb": round(out["peak_rss_mb"]),
            "failed": {c["code"]: c.get("reason", "")[:160] for c in checks if c["status"] == "failed"},
            "stderr": out["stderr"].strip().splitlines()[-1][:200] if out["rc"] not in (0, 1, 3) else ""}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--budget", default="standard")
    ap.add_argument("--per-check", action="store_true")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="degrade-memory-"))
    run, ev, tr = build(root, a)
    ckpt = (run / "checkpoint-200" / "model.safetensors").stat().st_size
    bound = 2 * ckpt + 2 ** 30
    vmem_kb = (reserved_address_space() + bound) // 1024
    out = {"checkpoint_mb": round(ckpt / MB), "bound_mb": round(bound / MB), "ulimit_v_mb": vmem_kb // 1024,
           "budget": a.budget, "no ulimit": diagnose(run, ev, tr, a.budget, None),
           "under ulimit -v": diagnose(run, ev, tr, a.budget, vmem_kb)}
    out["within_bound"] = all(r["peak_rss_mb"] <= bound / MB and not r["failed"] and r["exit"] in (0, 1, 3)
                              for r in (out["no ulimit"], out["under ulimit -v"]))
    if a.per_check:
        from degrade.check_spec import builtin_specs
        out["per_check_peak_rss_mb"] = {
            code: diagnose(run, ev, tr, a.budget, None, code)["peak_rss_mb"] for code in sorted(builtin_specs())}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
